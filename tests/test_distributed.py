"""The graph's steps on a pool of workers (FOLEY_EXECUTOR=celery, docs/scaling.md): a real
`redis-server` on a free loopback port as the broker, two Celery workers started here, the team
instance on a real PostgreSQL server (tests/test_team_instance.py's fixture), and `foley run` on
the smoke profile. One worker is killed with `kill -9` during a training step; the run fails
naming it, and a rerun completes with the model the in-process run made.

Needs Debian's `redis-server` (.ci/run installs it when missing) and PostgreSQL's server
binaries: without them the test fails, it is never skipped.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from click.testing import CliRunner
from conftest import smoke_overrides
from dagster import AssetKey, DagsterEventType, DagsterInstance
from test_team_instance import DEPLOY, free_port, postgres, stop, wait_for  # noqa: F401 (postgres: a fixture)

from foley_core.core.config import CONFIG_DIR, PROJECT_ROOT, _deep_merge, load_profile
from foley_core.core.fsutil import SharedFolderUnfit, check_shared_folder, who_holds
from foley_core.core.layout import layout
from foley_core.core.records import read_record
from orchestration.assets import artifacts_lock
from orchestration.automation import FOLEY_HOST_TAG, FOLEY_RUN_TAG
from orchestration.celery_executor import BROKER, EXECUTOR, NotReady, celery_app
from orchestration.cli import main

FOLEY = [sys.executable, "-m", "orchestration.cli"]
PER_CLASS = ("smoke__foley_dataset", "smoke__clap_embeddings", "smoke__generated_candidates")


def redis_server() -> str:
    found = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").is_file() else None)
    if not found:
        pytest.fail("redis-server not found: install Debian's `redis-server` package (.ci/run does)", pytrace=False)
    return found


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """A throwaway Redis on 127.0.0.1:<free port>, nothing persisted."""
    root = tmp_path_factory.mktemp("redis")
    port, log = free_port(), root / "redis.log"
    with open(log, "w") as out:
        server = subprocess.Popen([redis_server(), "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                   "--appendonly", "no", "--dir", str(root)], stdout=out, stderr=subprocess.STDOUT)
    try:
        url = f"redis://127.0.0.1:{port}/0"
        app = celery_app(url, url)
        wait_for("redis-server", lambda: app.connection_for_write().ensure_connection(max_retries=1) or True, 20,
                 server, log, retry_on=(Exception,))
        yield url
    finally:
        stop(server)


@pytest.fixture(scope="module")
def cluster(postgres, broker, tmp_path_factory):  # noqa: F811 (postgres: the imported fixture)
    """The team instance (deploy/dagster.yaml with the `compute` pool at 2: one slot per worker),
    and two workers, each `celery -A orchestration.worker worker -c 1` as deploy/ starts them."""
    root = tmp_path_factory.mktemp("cluster")
    home = root / "dagster_home"
    home.mkdir()
    config = yaml.safe_load((DEPLOY / "dagster.yaml").read_text())
    config["concurrency"]["pools"]["default_limit"] = 2
    (home / "dagster.yaml").write_text(yaml.safe_dump(config))
    env = {**os.environ, **postgres["env"], "DAGSTER_HOME": str(home), EXECUTOR: "celery", BROKER: broker,
           "FOLEY_CELERY_WATCH_S": "4", "PYTHONUNBUFFERED": "1", "DAGSTER_DISABLE_TELEMETRY": "1"}
    workers: dict[str, subprocess.Popen] = {}
    app = celery_app(broker, broker)

    def start(name: str) -> None:
        log = open(root / f"{name}.log", "a")
        workers[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "orchestration.worker", "worker", "-c", "1", "-n", f"{name}@%h",
             "-l", "INFO", "--without-mingle", "--without-gossip"],
            cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True)  # its own process group: the pool process goes with it

    def wait_ready(name: str) -> str:
        def answers():
            return [n for reply in app.control.ping(timeout=1.0) for n in reply if n.startswith(f"{name}@")]
        return wait_for(f"worker {name}", answers, 240, workers[name], root / f"{name}.log", retry_on=(Exception,))[0]

    try:
        for name in ("w1", "w2"):
            start(name)
        names = [wait_ready(name) for name in ("w1", "w2")]
        yield SimpleNamespace(root=root, home=home, env=env, broker=broker, workers=workers, names=names,
                              start=start, wait_ready=wait_ready)
    finally:
        for process in workers.values():
            stop(process, group=True)


def _profile_file(root: Path) -> Path:
    """The smoke profile with smoke_run's overrides under ``root``, as a file `foley run` takes."""
    raw = _deep_merge(yaml.safe_load((CONFIG_DIR / "smoke.yaml").read_text()), smoke_overrides(root))
    path = root / "profile.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _celery_workers_of(instance: DagsterInstance, run_ids: list[str]) -> dict[tuple[str, str | None], set[str]]:
    """(step key, partition) -> the workers that dagster-celery recorded executing it."""
    found: dict[tuple[str, str | None], set[str]] = {}
    for run_id in run_ids:
        partition = instance.get_run_by_id(run_id).tags.get("dagster/partition")
        for entry in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            metadata = entry.dagster_event.engine_event_data.metadata
            if "Celery worker" in metadata:
                found.setdefault((entry.step_key, partition), set()).add(metadata["Celery worker"].value)
    return found


def test_smoke_graph_on_two_workers_survives_a_worker_killed_during_training(cluster, smoke_run, tmp_path,
                                                                            monkeypatch):
    profile_file = _profile_file(tmp_path)
    where = layout(load_profile(str(profile_file)))
    env = {**cluster.env, "FOLEY_PROFILE": str(profile_file)}
    with open(tmp_path / "first.log", "w") as log:
        first = subprocess.Popen([*FOLEY, "run", "--profile", str(profile_file)], cwd=tmp_path, env=env,
                                 stdout=log, stderr=subprocess.STDOUT, text=True)
    step = where.step_lock("pretrained_ldm")
    holder = step.with_name(step.name + ".holder")

    def training_on_a_worker():
        return holder.is_file() and (where.ldm / "training").is_dir() and json.loads(holder.read_text())
    try:
        running = wait_for("foley run", training_on_a_worker, 600, first, tmp_path / "first.log",
                           retry_on=(OSError, ValueError))
        victim = next(name for name, p in cluster.workers.items() if os.getpgid(running["pid"]) == p.pid)
        os.killpg(cluster.workers[victim].pid, signal.SIGKILL)  # the worker and its pool process, mid-training
        cluster.workers[victim].wait()
        cluster.start(victim)  # as systemd's Restart= would: under the same name, without the step
        first.wait(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    output = (tmp_path / "first.log").read_text()
    assert first.returncode == 2, output[-3000:]
    error = output.strip().splitlines()[-1]
    assert error.startswith("error: pretrained_ldm") and "smoke__pretrained_ldm" in error, error
    assert f"{victim}@" in error and "is gone" in error, error
    # the kernel freed the dead worker's locks; the dead step wrote no record and no model
    assert who_holds(step) is None and who_holds(where.run_lock) is None
    assert read_record(where.record("pretrained_ldm")) is None
    assert not (where.ldm / "ldm_config.json").exists()

    cluster.wait_ready(victim)
    second = subprocess.run([*FOLEY, "run", "--profile", str(profile_file)], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=800)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert "executor: Celery, 2 worker(s)" in second.stdout, second.stdout[:2000]

    # the model the in-process run promoted, bit for bit, after a kill and a rerun on the workers
    promoted = (where.pipelines / "latest").resolve().name
    assert promoted == (smoke_run["profile"].artifact_dir() / "pipelines" / "latest").resolve().name

    # every step ran on a worker, and the per-class partitions were spread over both
    for key in ("DAGSTER_HOME", "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD",
                "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, cluster.env[key])
    with DagsterInstance.get() as instance:
        runs = [r.run_id for r in instance.get_runs() if r.tags.get("foley/profile") == str(profile_file)]
        ran_on = _celery_workers_of(instance, runs)
    per_class = {key: names for key, names in ran_on.items() if key[0] in PER_CLASS}
    assert {key[1] for key in per_class if key[0] == "smoke__generated_candidates"} == set(where.profile.class_names)
    assert set().union(*per_class.values()) == set(cluster.names), per_class
    generation = set().union(*(names for key, names in per_class.items() if key[0] == "smoke__generated_candidates"))
    assert generation == set(cluster.names), per_class
    assert ("smoke__pretrained_ldm", None) in ran_on and ("smoke__promoted_pipeline", None) in ran_on


def test_broker_down_at_the_start_is_one_line_naming_it(tmp_path, monkeypatch):
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    monkeypatch.setenv(EXECUTOR, "celery")
    monkeypatch.setenv(BROKER, url)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    profile_file = _profile_file(tmp_path)
    started = time.monotonic()
    result = CliRunner().invoke(main, ["run", "--profile", str(profile_file)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: the Celery broker " + url) and "does not answer" in lines[-1], lines
    assert time.monotonic() - started < 60
    assert not (tmp_path / "artifacts").exists()  # nothing ran

    monkeypatch.setenv(EXECUTOR, "celry")
    with pytest.raises(NotReady, match="FOLEY_EXECUTOR='celry': expected one of in_process, celery"):
        from orchestration.runner import run_pipeline
        run_pipeline(str(profile_file))


def test_a_folder_without_working_flock_is_refused_in_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "artifacts"
    check_shared_folder(folder)  # a local filesystem: fine, and the probe leaves nothing behind
    assert list(folder.iterdir()) == []

    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(fcntl, "flock", no_locks)  # an NFS mount without its lock manager, say
    with pytest.raises(SharedFolderUnfit) as refused:
        check_shared_folder(folder)
    assert str(refused.value).startswith(f"{folder}: flock does not work there (No locks available)")
    assert "\n" not in str(refused.value)

    monkeypatch.setattr(fcntl, "flock", lambda fd, operation: None)  # "succeeds" and excludes nobody
    with pytest.raises(SharedFolderUnfit, match="does not exclude a second holder"):
        check_shared_folder(folder)


def test_the_distributed_executor_checks_the_artifacts_folder(cluster, tmp_path, monkeypatch):
    """With the broker and workers up, `foley run` still refuses an artifacts folder without flock."""
    for key in ("DAGSTER_HOME", EXECUTOR, BROKER, "DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER",
                "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB"):
        monkeypatch.setenv(key, cluster.env[key])
    real = fcntl.flock

    def no_locks_in_artifacts(fd, operation):
        if "flock-probe" in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))
        return real(fd, operation)

    monkeypatch.setattr(fcntl, "flock", no_locks_in_artifacts)
    result = CliRunner().invoke(main, ["run", "--profile", str(_profile_file(tmp_path))])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines()[-1] == (
        f"error: {tmp_path / 'artifacts'}: flock does not work there (No locks available); the distributed "
        "executor needs shared storage with working flock across hosts (docs/scaling.md)")


def test_two_workers_never_write_one_class(smoke_profile):
    """A step a worker runs for a `foley run` works under that run's hold on the artifacts folder
    and holds its own (asset, partition) lock; a second process on the same class is refused at
    once, naming the holder (Dagster runs each step of a run once; this covers a redelivered task
    or a second run of the class)."""
    profile = smoke_profile()
    where = layout(profile)
    # the launching `foley run`: another process holding the artifacts folder
    launcher = subprocess.Popen([sys.executable, "-c", "import time\n"
                                 "from foley_core.core.fsutil import exclusive_lock\n"
                                 f"with exclusive_lock({str(where.run_lock)!r}):\n"
                                 "    print('held', flush=True); time.sleep(120)"],
                                stdout=subprocess.PIPE, text=True)
    try:
        assert launcher.stdout.readline().strip() == "held"
        context = SimpleNamespace(run=SimpleNamespace(tags={FOLEY_RUN_TAG: str(launcher.pid),
                                                            FOLEY_HOST_TAG: socket.gethostname()}),
                                  has_partition_key=True, partition_key="DogBark",
                                  asset_key=AssetKey(["smoke", "generated_candidates"]),
                                  log=SimpleNamespace(info=lambda message: None))
        lock = where.step_lock("generated_candidates[DogBark]")
        refused = []

        def second_worker():
            try:
                with artifacts_lock(context, profile):
                    refused.append(None)
            except RuntimeError as exc:
                refused.append(str(exc))

        with artifacts_lock(context, profile):  # at once: it does not wait for the run's own lock
            assert f"pid {os.getpid()}" in who_holds(lock)
            thread = threading.Thread(target=second_worker)
            thread.start()
            thread.join(30)
        assert refused and refused[0] and refused[0].startswith(
            f"generated_candidates[DogBark] is already being written by pid {os.getpid()} on {socket.gethostname()}")
        assert who_holds(lock) is None and who_holds(where.run_lock) is not None  # the run keeps its own
    finally:
        launcher.kill()
        launcher.wait()

    # a stage launched from the UI (no `foley run` behind it) waits for the whole folder instead
    ui_context = SimpleNamespace(run=SimpleNamespace(tags={}), has_partition_key=True, partition_key="DogBark",
                                 asset_key=AssetKey(["smoke", "generated_candidates"]),
                                 log=SimpleNamespace(info=lambda message: None))
    with artifacts_lock(ui_context, profile):
        assert f"pid {os.getpid()}" in who_holds(where.run_lock)
