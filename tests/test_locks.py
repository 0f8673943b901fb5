"""Concurrent writers and interrupted writes: the embedding cache, model promotion, run outputs and
generated-clip folders never pair, mix or half-write data. Real processes where the kernel matters."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf

from foley_core.clap.cache import EmbeddingCache
from foley_core.core.fsutil import HOST_TAG, LockHeld, exclusive_lock, lock_holder, replace_symlink, staged_dir

PROJECT = Path(__file__).resolve().parents[1]


def vector(text: str) -> np.ndarray:
    return np.frombuffer(hashlib.sha256(text.encode()).digest(), dtype=np.uint8)[:16].astype(np.float32) / 255.0


class HashEncoder:
    """A fake CLAP text encoder: one deterministic vector per text, so a wrong row is detectable."""

    version = "hash-v1"
    sample_rate = 16000

    def encode_text(self, texts):
        import torch

        return torch.from_numpy(np.stack([vector(t) for t in texts]))


CACHE_WORKER = f"""
import sys, time
from pathlib import Path
import numpy as np
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_locks import HashEncoder, vector
from foley_core.clap.cache import EmbeddingCache

root, name, rounds, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
encoder = HashEncoder()
while not go.exists():  # start both writers together
    time.sleep(0.005)
cache = EmbeddingCache(root, encoder.version)  # one long-lived writer, like an asset run
for i in range(rounds):
    keys = [f"{{name}}-{{i}}-{{j}}" for j in range(3)]
    cache.update_text(encoder, keys)
    fresh = EmbeddingCache(root, encoder.version).text(keys)  # a reader opening the files right now
    expected = np.stack([vector(k) for k in keys])
    if not np.allclose(fresh, expected):
        sys.exit(f"round {{i}}: wrong embeddings read back for {{keys}}")
"""


def _spawn(code: str, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=PROJECT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# ---------------------------------------------------------------- the embedding cache


def test_two_processes_appending_to_one_cache_keep_every_key_with_its_own_embedding(tmp_path):
    root, go, rounds = tmp_path / "cache", tmp_path / "go", 60
    workers = [_spawn(CACHE_WORKER, root, name, rounds, go) for name in ("a", "b")]
    time.sleep(0.5)
    go.touch()
    errors = []
    for worker in workers:
        _, err = worker.communicate(timeout=600)
        if worker.returncode:
            errors.append(err.strip().splitlines()[-1])
    assert not errors, errors
    cache = EmbeddingCache(root, HashEncoder.version)
    keys = [f"{n}-{i}-{j}" for n in ("a", "b") for i in range(rounds) for j in range(3)]
    assert len(cache) == len(keys)  # nothing lost, nothing duplicated
    np.testing.assert_allclose(cache.text(keys), np.stack([vector(k) for k in keys]))


def test_a_writer_that_loaded_before_another_appended_keeps_the_others_rows(tmp_path):
    encoder = HashEncoder()
    first, second = EmbeddingCache(tmp_path, encoder.version), EmbeddingCache(tmp_path, encoder.version)
    first.update_text(encoder, ["rain", "thunder"])
    assert second.update_text(encoder, ["wind", "rain"]) == {"computed": 1, "reused": 1}  # sees the other's rows
    assert second.text(["thunder"]).shape == (1, 16)  # and reads what the other wrote after it opened
    reopened = EmbeddingCache(tmp_path, encoder.version)
    np.testing.assert_allclose(reopened.text(["rain", "thunder", "wind"]), np.stack([vector(t) for t in ("rain", "thunder", "wind")]))
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == ["cache.json", "text.npz"]


def test_cache_index_and_rows_are_one_pickle_free_file(tmp_path):
    encoder = HashEncoder()
    EmbeddingCache(tmp_path, encoder.version).update_text(encoder, ["a dog", "", "ünïcode ✓"])
    with np.load(tmp_path / "text.npz", allow_pickle=False) as data:
        assert data["keys"].tolist() == ["a dog", "", "ünïcode ✓"] and data["rows"].shape == (3, 16)
        assert str(data["model_version"]) == encoder.version
    np.testing.assert_allclose(EmbeddingCache(tmp_path, encoder.version).text([""]), vector("")[None])


def test_cache_reset_for_another_model_waits_for_the_lock(tmp_path):
    encoder = HashEncoder()
    EmbeddingCache(tmp_path, encoder.version).update_text(encoder, ["rain"])
    opened = threading.Event()
    with exclusive_lock(tmp_path / ".lock"):
        thread = threading.Thread(target=lambda: (EmbeddingCache(tmp_path, "another-model"), opened.set()))
        thread.start()
        time.sleep(0.5)
        assert not opened.is_set()  # the reset waits while a writer holds the lock
        assert (tmp_path / "text.npz").is_file()
    thread.join(10)
    assert opened.is_set() and not (tmp_path / "text.npz").exists()
    assert json.loads((tmp_path / "cache.json").read_text())["model_version"] == "another-model"


def test_a_cache_reset_by_another_model_is_not_overwritten_by_the_old_one(tmp_path):
    encoder = HashEncoder()
    old = EmbeddingCache(tmp_path, encoder.version)
    EmbeddingCache(tmp_path, "another-model")
    with pytest.raises(RuntimeError, match="another-model"):
        old.update_text(encoder, ["rain"])


def test_legacy_two_file_cache_is_dropped_not_misread(tmp_path):
    (tmp_path / "cache.json").write_text(json.dumps({"model_version": "hash-v1"}))
    np.save(tmp_path / "text.npy", np.zeros((1, 16), dtype=np.float32))
    (tmp_path / "text_index.csv").write_text("key,row\nrain,0\n")
    cache = EmbeddingCache(tmp_path, "hash-v1")
    assert len(cache) == 0 and not (tmp_path / "text.npy").exists() and not (tmp_path / "text_index.csv").exists()


# ---------------------------------------------------------------- the lock helper

HOLDER = """
import sys, time
from foley_core.core.fsutil import exclusive_lock
with exclusive_lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(600)
"""


def _hold_in_another_process(lock: Path) -> subprocess.Popen:
    holder = _spawn(HOLDER, lock)
    assert holder.stdout.readline().strip() == "held", holder.stderr.read()
    return holder


def test_lock_names_its_holder_and_a_killed_holder_leaves_no_stale_lock(tmp_path):
    lock = tmp_path / "run.lock"
    holder = _hold_in_another_process(lock)
    try:
        with pytest.raises(LockHeld, match=rf"pid {holder.pid}\b") as failure:
            with exclusive_lock(lock, timeout=0):
                pass
        message = str(failure.value)
        assert str(lock) in message and failure.value.holder["command"].endswith(str(lock))  # its argv
        assert failure.value.holder["pid"] == holder.pid and lock_holder(lock)["pid"] == holder.pid
        started = time.monotonic()
        with pytest.raises(LockHeld):
            with exclusive_lock(lock, timeout=0.3):
                pass
        assert time.monotonic() - started >= 0.3
    finally:
        holder.send_signal(signal.SIGKILL)  # kill -9: no cleanup code runs
        holder.wait()
    with exclusive_lock(lock, timeout=0):  # the kernel released it
        assert lock_holder(lock)["pid"] == os.getpid()
    assert lock_holder(lock) is None


def test_lock_excludes_threads_and_refuses_nesting(tmp_path):
    lock, inside, overlaps = tmp_path / "x.lock", [], []

    def work():
        for _ in range(20):
            with exclusive_lock(lock):
                inside.append(1)
                overlaps.append(len(inside))
                time.sleep(0.001)
                inside.pop()

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert max(overlaps) == 1 and len(overlaps) == 80
    with exclusive_lock(lock):
        with pytest.raises(RuntimeError, match="nested"):
            with exclusive_lock(lock):
                pass


# ---------------------------------------------------------------- staging folders and symlinks


def test_staged_dir_replaces_whole_and_keeps_the_old_on_failure(tmp_path):
    final = tmp_path / "DogBark"
    with staged_dir(final) as staging:
        (staging / "a.txt").write_text("1")
        (staging / "b.txt").write_text("1")
        assert not final.exists()  # nothing visible until the block ends
    with pytest.raises(ZeroDivisionError):
        with staged_dir(final) as staging:
            (staging / "a.txt").write_text("2")
            1 / 0
    assert sorted(p.name for p in final.iterdir()) == ["a.txt", "b.txt"] and (final / "a.txt").read_text() == "1"
    with staged_dir(final) as staging:
        (staging / "a.txt").write_text("3")
    assert [p.name for p in final.iterdir()] == ["a.txt"] and (final / "a.txt").read_text() == "3"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".staging.lock", "DogBark"]  # no leftovers
    with pytest.raises(FileExistsError):
        with staged_dir(final, replace=False) as staging:
            (staging / "c.txt").write_text("4")
    assert [p.name for p in final.iterdir()] == ["a.txt"]


def test_staged_dir_cleans_a_dead_writers_leftovers_and_restores_a_half_swapped_folder(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    (tmp_path / f".DogBark.staging-{pid}-abc").mkdir()  # killed while writing
    (tmp_path / f".DogBark.old-{pid}-def").mkdir()  # killed between the two renames of a swap
    (tmp_path / f".DogBark.old-{pid}-def" / "000.wav").write_text("old")
    (tmp_path / f".Rain.staging-{os.getpid()}-ghi").mkdir()  # a live writer's: left alone
    (tmp_path / f".Keyboard.staging-{pid}@{HOST_TAG}-jkl").mkdir()  # this host's, dead: cleaned
    other_host = f".Footstep.staging-{pid}@{'0' * 8 if HOST_TAG != '0' * 8 else '1' * 8}-mno"
    (tmp_path / other_host).mkdir()  # another host's (shared storage): its pid means nothing here
    with staged_dir(tmp_path / "Other") as staging:
        assert staging.name.startswith(f".Other.staging-{os.getpid()}@{HOST_TAG}-")
        (staging / "x").write_text("x")
    assert (tmp_path / "DogBark" / "000.wav").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([f".Rain.staging-{os.getpid()}-ghi", other_host,
                                                                 ".staging.lock", "DogBark", "Other"])


def test_replace_symlink_is_safe_under_concurrent_swaps(tmp_path):
    for name in "ab":
        (tmp_path / name).mkdir()
    errors = []

    def swap(target):
        try:
            for _ in range(200):
                replace_symlink(tmp_path / "latest", target)
        except Exception as exc:  # noqa: BLE001 - the test reports any failure
            errors.append(exc)

    threads = [threading.Thread(target=swap, args=(t,)) for t in "abab"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and os.readlink(tmp_path / "latest") in ("a", "b")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "latest"]


# ---------------------------------------------------------------- model promotion


class Killed(Exception):
    """Stands in for the process dying mid-write."""


class FakePipeline:
    """Writes what save_pretrained writes; ``fail`` stops it half-way like a kill would."""

    clap_source = "laion"

    def __init__(self, fail: bool = False, delay: float = 0.0):
        self.fail, self.delay, self.saved = fail, delay, 0

    def save_pretrained(self, folder, *, clap_folder=None, extra=None):
        self.saved += 1
        (Path(folder) / "ldm").mkdir(parents=True, exist_ok=True)
        (Path(folder) / "ldm" / "weights").write_text(json.dumps(extra))
        time.sleep(self.delay)
        if self.fail:
            raise Killed("killed while saving")
        (Path(folder) / "pipeline.json").write_text(json.dumps(extra))
        return folder


def _profile(tmp_path):
    return SimpleNamespace(name="smoke", artifact_dir=lambda *parts: (tmp_path / "artifacts").joinpath(*parts),
                           resolve=lambda path: Path(path), paths=SimpleNamespace(outputs_dir=tmp_path / "outputs"),
                           class_names=["DogBark"], audio=SimpleNamespace(hop_length=160),
                           evaluation=SimpleNamespace(regression_margin=0.25))


def _metrics(version: str, **extra) -> dict:
    return {"model_version": version, "mean": {"fad": 1.0, "kad": 0.1}, **extra}


def test_promote_never_leaves_a_half_written_model(tmp_path):
    from foley_core.registry import latest_pipeline_dir
    from foley_core.registry import promote_base as promote

    profile = _profile(tmp_path)
    good = promote(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    with pytest.raises(Killed):
        promote(FakePipeline(fail=True), profile, _metrics("v2"), export_problems=0)
    root = profile.artifact_dir("pipelines")
    assert not (root / "v2").exists()  # no folder rather than half a model
    assert latest_pipeline_dir(profile) == good.resolve()
    assert json.loads((root / "accepted_metrics.json").read_text())["model_version"] == "v1"
    assert not [p for p in root.iterdir() if ".staging-" in p.name]


def test_promote_reuses_a_complete_version_folder(tmp_path):
    from foley_core.registry import promote_base as promote

    profile = _profile(tmp_path)
    promote(FakePipeline(), profile, _metrics("v1"), export_problems=0)
    again = FakePipeline(fail=True)  # would fail if it were asked to save again
    folder = promote(again, profile, _metrics("v1", note="re-evaluated"), export_problems=0)
    assert again.saved == 0 and (folder / "pipeline.json").is_file()
    assert json.loads((folder.parent / "accepted_metrics.json").read_text())["note"] == "re-evaluated"


def test_concurrent_promotions_all_succeed_and_latest_is_complete(tmp_path):
    from foley_core.registry import latest_pipeline_dir
    from foley_core.registry import promote_base as promote

    profile = _profile(tmp_path)
    errors = []

    def run(version):
        try:
            for i in range(40):
                promote(FakePipeline(), profile, _metrics(f"{version}-{i % 3}"), export_problems=0)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(v,)) for v in ("a", "b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert (latest_pipeline_dir(profile) / "pipeline.json").is_file()
    root = profile.artifact_dir("pipelines")
    assert all((root / f"{v}-{i}" / "metrics.json").is_file() for v in "abc" for i in range(3))


def test_latest_never_resolves_to_a_half_written_folder(tmp_path):
    from foley_core.registry import latest_pipeline_dir

    profile = _profile(tmp_path)
    root = profile.artifact_dir("pipelines")
    (root / "v0" / "ldm").mkdir(parents=True)  # written in place by an older version, then killed
    (root / "latest").symlink_to("v0")
    with pytest.raises(FileNotFoundError, match="incomplete"):
        latest_pipeline_dir(profile)


# ---------------------------------------------------------------- generated clips


def _generation(n_clips: int, value: float):
    from foley_core.generation.generate import ClassGeneration
    from foley_core.generation.selection import SlotSelection

    clips = np.full((n_clips, 2048), value, dtype=np.float32)
    slots = [SlotSelection(attempt=0, index=0, score=0.5, accepted=True, floor=None, scores=[[0.5]]) for _ in range(n_clips)]
    return ClassGeneration("DogBark", "a dog", 8000, clips, clips, slots, list(range(n_clips)))


def test_a_smaller_generation_replaces_the_old_clips_entirely(tmp_path):
    from foley_core.generation.store import SELECTION, load_clips, save_class_generation

    folder = tmp_path / "generation" / "adapter" / "DogBark"
    save_class_generation(_generation(3, 0.1), folder)
    save_class_generation(_generation(2, 0.2), folder)
    for kind in ("selected", "first"):
        clips, rate = load_clips(folder / kind)
        assert clips.shape == (2, 2048) and rate == 8000 and np.allclose(clips, 0.2, atol=1e-3)
    assert len(json.loads((folder / SELECTION).read_text())["slots"]) == 2
    assert sorted(p.name for p in folder.parent.iterdir() if not p.name.startswith(".")) == ["DogBark"]


def test_an_interrupted_generation_save_keeps_the_previous_one(tmp_path, monkeypatch):
    from foley_core.generation import store

    folder = tmp_path / "DogBark"
    store.save_class_generation(_generation(3, 0.1), folder)
    monkeypatch.setattr(store, "write_text_atomic", lambda *a, **k: (_ for _ in ()).throw(Killed()))
    with pytest.raises(Killed):
        store.save_class_generation(_generation(2, 0.2), folder)
    clips, _ = store.load_clips(folder / "selected")
    assert clips.shape == (3, 2048) and np.allclose(clips, 0.1, atol=1e-3)


# ---------------------------------------------------------------- run outputs


def _run_inputs(profile):
    from foley_core.core.layout import layout
    from foley_core.generation.store import save_class_generation

    where = layout(profile)
    (where.dcase / "DogBark").mkdir(parents=True)
    sf.write(where.dcase / "DogBark" / "000.wav", np.zeros(2048, dtype=np.float32), 8000)

    save_class_generation(_generation(1, 0.1), where.generation("adapter", "DogBark"))
    metrics = {"per_class": {"DogBark": {"fad": 1.0, "kad": 0.1}},
               "clap": [{"class": "DogBark", "mean_selected_score": 0.5, "mean_candidate_score": 0.4}],
               "ablation": [{"adapter": True, "selection": True, "fad": 1.0, "kad": 0.1}],
               "class_consistency_fad": {"DogBark": {"DogBark": 1.0}},
               "mean": {"fad": 1.0, "kad": 0.1}, "consistent_classes": ["DogBark"], "model_version": "v1"}
    path = profile.artifact_dir("evaluation", "metrics.json")
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(metrics))


def test_two_runs_finishing_in_the_same_second_get_their_own_output_folders(tmp_path, monkeypatch):
    import foley_core.run_outputs as report

    profile = _profile(tmp_path)
    _run_inputs(profile)
    monkeypatch.setattr(report.time, "strftime", lambda fmt, *a: "20250101-120000")  # the same second
    first = report.write_run_outputs(profile)
    second = report.write_run_outputs(profile)
    assert first != second and first.name.startswith("20250101-120000-smoke-")
    for folder in (first, second):
        assert (folder / "report.html").is_file() and (folder / "dcase" / "DogBark" / "000.wav").is_file()
    outputs = tmp_path / "outputs"
    assert (outputs / "latest").resolve() == second.resolve()
    assert sorted(p.name for p in outputs.iterdir() if not p.name.startswith(".")) == sorted([first.name, second.name, "latest"])


def test_a_failed_report_leaves_no_half_run_folder_and_latest_unchanged(tmp_path, monkeypatch):
    import foley_core.run_outputs as report

    profile = _profile(tmp_path)
    _run_inputs(profile)
    first = report.write_run_outputs(profile)
    monkeypatch.setattr(report, "write_report", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(OSError, match="disk full"):
        report.write_run_outputs(profile)
    outputs = tmp_path / "outputs"
    assert sorted(p.name for p in outputs.iterdir() if not p.name.startswith(".")) == sorted([first.name, "latest"])
    assert (outputs / "latest").resolve() == first.resolve()



# ---------------------------------------------------------------- stages launched outside `foley run`


def test_a_stage_launched_from_the_ui_waits_for_the_foley_run_holding_the_folder(tmp_path):
    """A daemon- or UI-launched stage takes the artifacts lock; inside `foley run` (same process) it runs
    under the run's hold instead of deadlocking on it."""
    from foley_core.core.layout import layout
    from orchestration.assets import artifacts_lock

    profile = _profile(tmp_path)
    lock, released = layout(profile).run_lock, tmp_path / "released"
    logs: list[str] = []
    context = SimpleNamespace(log=SimpleNamespace(info=logs.append))
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from foley_core.core.fsutil import exclusive_lock\n"
        f"with exclusive_lock(Path({str(lock)!r})):\n"
        f"    Path({str(tmp_path / 'holding')!r}).touch(); time.sleep(2)\n"
        f"Path({str(released)!r}).touch()")], cwd=Path(__file__).resolve().parents[1])
    try:
        deadline = time.time() + 60
        while not (tmp_path / "holding").exists() and time.time() < deadline:
            time.sleep(0.05)
        with artifacts_lock(context, profile):
            waited_for_release = released.exists() or holder.poll() is not None
        assert waited_for_release and any("waiting for" in line for line in logs), logs
    finally:
        holder.wait(timeout=60)
    with exclusive_lock(lock):  # as `foley run` holds it: its own stages do not wait on it
        with artifacts_lock(context, profile):
            pass
