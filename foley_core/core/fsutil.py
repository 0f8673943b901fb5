"""Safe shared folders: an inter-process lock, and folders written aside then swapped in whole.

``exclusive_lock`` is an flock (via ``filelock``): the kernel drops it when its process dies, even
on ``kill -9``, so a crashed writer never leaves a stale lock. Its holder (pid, host, command,
since) is recorded in a side file so that a refused caller can say who holds it.

``staged_dir`` writes a folder under a hidden staging name beside its final place and renames it
in when complete: readers see the old folder or the new one, never a mix or half of one, and a
killed writer leaves only a hidden staging folder, which the next writer of that parent removes.
``replace_symlink`` repoints a link atomically through a unique temporary name.

Hidden names: ``.<name>.staging-<pid>@<host>-<random>`` (being written),
``.<name>.old-<pid>@<host>-<random>`` (the replaced folder, deleted once the new one is in place),
``.<name>.link-<pid>@<host>-<random>`` (a symlink about to replace ``<name>``) and ``.staging.lock``
(one per parent, held while swapping). ``<host>`` is a short hash of the writer's host name: on an
artifacts folder that workers on several hosts share, a writer judges only its own host's pids
(another host's pid 1234 says nothing about this host's), and leaves the others' names alone.
``check_shared_folder`` probes a folder with ``.flock-probe-<pid>-<random>`` (removed at once).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

from foley_core.core.hashing import sha256_hex

SWAP_LOCK = ".staging.lock"
# .<name>.<kind>-<pid>@<host hash>-<random hex>; names without a host are this host's (written before it)
_OURS = re.compile(r"^\.(?P<name>.+)\.(?P<kind>staging|old|link)-(?P<pid>\d+)(?:@(?P<host>[0-9a-f]{8}))?-[^-]+$")
HOST_TAG = sha256_hex(socket.gethostname())[:8]
_held = threading.local()  # lock paths this thread holds: nesting one would deadlock on itself
_held_by_process: set[Path] = set()  # lock paths any thread of this process holds


def held_by_this_process(path: Path | str) -> bool:
    """True while some thread of this process holds the lock at ``path`` (``exclusive_lock``)."""
    return Path(path).absolute() in _held_by_process


class LockHeld(TimeoutError):
    """``exclusive_lock`` gave up waiting; ``holder`` is the holder's record (or None if unknown)."""

    def __init__(self, path: Path, holder: dict | None, timeout: float):
        self.path, self.holder = path, holder
        waited = f" (waited {timeout:g} s)" if timeout > 0 else ""
        super().__init__(f"{path} is locked by {describe_holder(holder)}{waited}")


def describe_holder(holder: dict | None) -> str:
    if holder is None:
        return "a process that did not record itself"
    text = f"pid {holder['pid']} on {holder['host']} since {holder['since']} ({holder['command']})"
    if holder["host"] == socket.gethostname() and not process_alive(holder["pid"]):
        # The kernel frees an flock when its process dies, so the record is stale: a new holder
        # has just taken the lock and not written its own record yet.
        text = f"another process (last recorded holder, {text}, has exited)"
    return text


def _holder_file(path: Path) -> Path:
    return path.with_name(path.name + ".holder")


def lock_holder(path: Path) -> dict | None:
    """The recorded holder of the lock file ``path``: {pid, host, command, since}, or None."""
    try:
        return json.loads(_holder_file(Path(path)).read_text())
    except (FileNotFoundError, ValueError):
        return None


def who_holds(path: Path | str) -> str | None:
    """Who holds the lock at ``path`` right now (a description), or None when it is free.
    A probe: takes and drops the lock when nobody holds it; a stale holder record left by a
    killed process does not count (the kernel freed its flock)."""
    path = Path(path).absolute()
    if not path.exists():
        return None
    lock = FileLock(str(path), timeout=0)
    try:
        lock.acquire()
    except Timeout:
        return describe_holder(lock_holder(path))
    lock.release()
    return None


@contextmanager
def exclusive_lock(path: Path | str, timeout: float | None = None) -> Iterator[Path]:
    """Hold an exclusive lock on the file ``path`` (created if missing) for the ``with`` block.

    ``timeout``: None waits as long as it takes, 0 fails at once, > 0 waits that many seconds;
    giving up raises ``LockHeld`` naming the holder. Excludes other processes and other threads;
    taking the same lock again inside the block (same thread) raises RuntimeError, not a deadlock.
    """
    path = Path(path).absolute()
    held = _held.__dict__.setdefault("paths", set())
    if path in held:
        raise RuntimeError(f"nested exclusive_lock on {path}: this thread already holds it")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path), timeout=-1 if timeout is None else timeout)
    try:
        lock.acquire()
    except Timeout:
        raise LockHeld(path, lock_holder(path), timeout or 0) from None
    held.add(path)
    _held_by_process.add(path)
    try:
        write_text_atomic(_holder_file(path), json.dumps({
            "pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv)[:500],
            "since": dt.datetime.now().isoformat(timespec="seconds")}))
        yield path
    finally:
        # Remove our record before letting go, so it never describes the next holder.
        _holder_file(path).unlink(missing_ok=True)
        held.discard(path)
        _held_by_process.discard(path)
        lock.release()


class SharedFolderUnfit(RuntimeError):
    """``check_shared_folder`` found a folder where the locks or the swaps would not hold."""


def check_shared_folder(folder: Path | str) -> None:
    """Refuse, in one line naming ``folder``, a folder that several hosts' workers cannot share
    safely: an ``flock`` that fails there (a filesystem or mount without locks: filelock would
    otherwise fall back to a marker file that a killed holder leaves behind), an flock that lets a
    second holder in, or a rename within the folder that fails (``staged_dir``, ``atomic_file``).

    A probe from one host: it cannot see an flock that each NFS client keeps to itself
    (``local_lock=flock``, ``nolock``); docs/scaling.md says what the mount must guarantee."""
    folder = Path(folder).absolute()
    folder.mkdir(parents=True, exist_ok=True)
    probe = folder / f".flock-probe-{os.getpid()}-{secrets.token_hex(4)}"
    first = FileLock(str(probe), timeout=0, fallback_to_soft=False)
    second = FileLock(str(probe), timeout=0, fallback_to_soft=False)
    need = "the distributed executor needs shared storage with working flock across hosts (docs/scaling.md)"
    try:
        try:
            first.acquire()
        except OSError as exc:
            raise SharedFolderUnfit(f"{folder}: flock does not work there ({exc.strerror or exc}); {need}") from None
        try:
            try:
                second.acquire()
            except Timeout:
                pass
            else:
                second.release()
                raise SharedFolderUnfit(f"{folder}: flock there does not exclude a second holder; {need}")
        finally:
            first.release()
        staging, final = probe.with_name(probe.name + ".dir"), probe.with_name(probe.name + ".renamed")
        try:
            os.mkdir(staging)
            os.rename(staging, final)
            os.rmdir(final)
        except OSError as exc:
            raise SharedFolderUnfit(f"{folder}: renaming a folder within it fails ({exc.strerror or exc}); "
                                    "the stage-and-swap writes need it (docs/scaling.md)") from None
    finally:
        probe.unlink(missing_ok=True)


@contextmanager
def staged_dir(final: Path | str, *, replace: bool = True, lock: bool = True) -> Iterator[Path]:
    """Yield an empty hidden folder beside ``final``; when the block ends cleanly it becomes ``final``.

    The one stage-and-swap of the project. An existing ``final`` is kept until the new folder is
    in place, then deleted (``replace=False`` raises FileExistsError instead). If the block
    raises, the staging folder is deleted and ``final`` is untouched. Stale staging folders of
    dead writers beside ``final`` are removed, and a folder a kill left set aside between the
    swap's two renames is put back. ``lock``: one swap at a time in the parent, through a
    ``.staging.lock`` file there; off for a folder the user chose (a DCASE export), where nothing
    may be left beside it and one writer at a time is the user's.
    """
    final = Path(final).absolute()
    final.parent.mkdir(parents=True, exist_ok=True)
    guard = (lambda: exclusive_lock(final.parent / SWAP_LOCK)) if lock else nullcontext
    with guard():
        clean_stale(final.parent)
    staging = final.with_name(f".{final.name}.staging-{_writer()}")
    staging.mkdir()  # not mkdtemp: its 0700 mode would stick to the final folder
    try:
        yield staging
        with guard():
            _swap_in(staging, final, replace)
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # gone already after a successful swap


def _swap_in(staging: Path, final: Path, replace: bool) -> None:
    if not final.exists() and not final.is_symlink():
        os.rename(staging, final)
        return
    if not replace:
        raise FileExistsError(f"{final} already exists")
    # POSIX cannot rename a folder over a non-empty one: move the old aside, move the new in,
    # then delete the old. A kill between the two renames leaves the old one aside, and
    # clean_stale puts it back.
    old = final.with_name(f".{final.name}.old-{_writer()}")
    os.rename(final, old)
    try:
        os.rename(staging, final)
    except BaseException:
        os.rename(old, final)
        raise
    if old.is_symlink():
        old.unlink()
    else:
        shutil.rmtree(old, ignore_errors=True)


def _writer() -> str:
    """The unique part of a hidden name: ``<pid>@<host hash>-<random>``."""
    return f"{os.getpid()}@{HOST_TAG}-{secrets.token_hex(4)}"


def clean_stale(parent: Path) -> None:
    """Delete what writers that died left in ``parent`` under our hidden names; put back a folder
    whose swap a kill interrupted (if nothing has replaced it since). Live writers' names stay, and
    so do other hosts' (their pids cannot be checked from here; their own next writer cleans them)."""
    for entry in sorted(Path(parent).glob(".*-*-*")):
        match = _OURS.match(entry.name)
        if not match or (match["host"] or HOST_TAG) != HOST_TAG or process_alive(int(match["pid"])):
            continue
        final = entry.with_name(match["name"])
        if match["kind"] == "old" and not final.exists() and not final.is_symlink():
            os.rename(entry, final)
        elif entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
        else:
            entry.unlink(missing_ok=True)


def replace_symlink(link: Path | str, target: Path | str) -> None:
    """Point the symlink ``link`` at ``target`` (stored as given, e.g. a relative name), atomically."""
    link = Path(link)
    tmp = link.with_name(f".{link.name}.link-{_writer()}")
    tmp.symlink_to(target)
    try:
        os.replace(tmp, link)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def current_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


@contextmanager
def atomic_file(path: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new temporary path beside ``path``; when the block ends cleanly it replaces ``path``
    in one rename, so a reader never sees half a file. If the block raises, it is deleted.

    The one atomic writer: text, wav, npz and safetensors files all go through it. The file has
    the mode the umask gives any new file. mkstemp's own 0600 would survive the rename, and a
    team that reads through a shared group (deploy/README.md) could not open the report,
    metrics or clips. The suffix keeps the extension a writer may infer the format from."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    os.fchmod(fd, 0o666 & ~current_umask())
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_text_atomic(path: Path, text: str) -> None:
    """Write ``text`` through ``atomic_file``."""
    with atomic_file(path) as tmp:
        tmp.write_text(text)


def process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True
