"""The shared core: what every stage package and the top use, and which imports none of them.

config (profiles), layout (where artifacts live), records (what a stage hands on), fsutil (file
safety: atomic writes, stage-and-swap, locks), hashing (every hash and derived seed),
code_version (code versions from the code a stage may run), progress (the terminal), training
and resume (the Lightning Trainer, exact resume), audio and plots (audio I/O, pictures), env
and hardware (offline defaults, what `precision: auto` picks). See docs/architecture.md.
"""
