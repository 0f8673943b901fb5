"""The team instance (deploy/): a real PostgreSQL server, the smoke pipeline run against
deploy/dagster.yaml, and the runs, checks and lineage read back through a real
dagster-webserver's GraphQL API, loaded from deploy/workspace.yaml.

Needs PostgreSQL's server binaries (initdb, postgres): on PATH, or Debian's
/usr/lib/postgresql/<version>/bin (.ci/run installs Debian's `postgresql` when they are
missing). Without them the test fails: it is never skipped.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psycopg2
import pytest
from conftest import smoke_overrides
from dagster import deserialize_value

from foley_core.core.config import PROJECT_ROOT

DEPLOY = PROJECT_ROOT / "deploy"
PG_USER, PG_DB = "foley", "dagster"


def pg_bindir() -> Path:
    """The folder holding initdb and postgres: on PATH first, else Debian's versioned folders."""
    candidates = []
    on_path = shutil.which("initdb")
    if on_path:
        candidates += [Path(on_path).parent, Path(os.path.realpath(on_path)).parent]
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    candidates += sorted(debian, key=lambda p: [int(x) for x in p.parent.name.split(".") if x.isdigit()], reverse=True)
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    pytest.fail("PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
                "/usr/lib/postgresql/*/bin: install Debian's `postgresql` package (.ci/run does)", pytrace=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(what: str, probe, timeout: float, process: subprocess.Popen, log: Path, retry_on=(OSError,)):
    """Call ``probe`` until it returns something truthy (``retry_on`` errors: not up yet);
    fail with the process's log if it dies or the time runs out."""
    deadline = time.monotonic() + timeout
    error = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-4000:]}", pytrace=False)
        try:
            result = probe()
            if result:
                return result
        except retry_on as exc:
            error = exc
        time.sleep(0.5)
    pytest.fail(f"{what} did not answer within {timeout:.0f} s ({error}):\n{log.read_text()[-4000:]}", pytrace=False)


def stop(process: subprocess.Popen | None, sig: int = signal.SIGTERM, group: bool = False) -> None:
    if process is None or process.poll() is not None:
        return
    try:
        os.killpg(process.pid, sig) if group else process.send_signal(sig)
        process.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL) if group else process.kill()
        except ProcessLookupError:
            pass
        process.wait(timeout=10)


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    """A throwaway PostgreSQL server on 127.0.0.1:<free port>, password auth, one database.

    initdb and postgres refuse to run as root (CI runs as root): then the server runs as an
    unprivileged user (`postgres`, which Debian's package creates, else `nobody`), in a
    folder under the system temp dir that this user owns.
    """
    bindir = pg_bindir()
    run_as: dict = {}
    if os.geteuid() == 0:
        name = "postgres" if _user_exists("postgres") else "nobody"
        entry = pwd.getpwnam(name)
        base = Path(tempfile.mkdtemp(prefix="foley-pg-"))
        os.chown(base, entry.pw_uid, entry.pw_gid)
        run_as = {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}
    else:
        base = tmp_path_factory.mktemp("pg")
    data, log = base / "data", base / "postgres.log"
    password = secrets.token_urlsafe(16)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    server = None
    try:
        pwfile = base / "pwfile"
        pwfile.write_text(password + "\n")
        if run_as:
            os.chown(pwfile, run_as["user"], run_as["group"])
        init = subprocess.run([str(bindir / "initdb"), "-D", str(data), "-U", PG_USER, "--pwfile", str(pwfile),
                               "--auth", "scram-sha-256", "-E", "UTF8", "--locale", "C", "--no-sync"],
                              cwd=base, env=env, capture_output=True, text=True, **run_as)
        assert init.returncode == 0, f"initdb failed:\n{init.stdout}\n{init.stderr}"
        port = free_port()
        with open(log, "w") as out:
            server = subprocess.Popen(
                [str(bindir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(base),
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off"],
                cwd=base, env=env, stdout=out, stderr=subprocess.STDOUT, **run_as)

        def connect(db="postgres"):
            return psycopg2.connect(host="127.0.0.1", port=port, user=PG_USER, password=password, dbname=db,
                                    connect_timeout=3)

        admin = wait_for("postgres", connect, 30, server, log, retry_on=(psycopg2.OperationalError,))
        admin.autocommit = True
        with admin.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {PG_DB}")
        admin.close()
        yield {"env": {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(port), "DAGSTER_PG_USER": PG_USER,
                       "DAGSTER_PG_PASSWORD": password, "DAGSTER_PG_DB": PG_DB},
               "connect": lambda: connect(PG_DB)}
    finally:
        stop(server, signal.SIGINT)  # SIGINT: PostgreSQL's fast shutdown
        shutil.rmtree(base, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


@pytest.fixture(scope="module")
def team_instance(postgres, tmp_path_factory):
    """The smoke pipeline run with `foley run`'s runner against deploy/dagster.yaml, then a
    dagster-webserver on the same instance serving deploy/workspace.yaml."""
    from orchestration.runner import run_pipeline

    root = tmp_path_factory.mktemp("team")
    home = root / "dagster_home"
    home.mkdir()
    shutil.copyfile(DEPLOY / "dagster.yaml", home / "dagster.yaml")
    env = {**postgres["env"], "DAGSTER_HOME": str(home)}
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        lines: list[str] = []
        outcome = run_pipeline("smoke", smoke_overrides(root), echo=lines.append)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    port, log = free_port(), root / "webserver.log"
    webserver_env = {**os.environ, **env, "FOLEY_PROFILE": "smoke", "DAGSTER_DISABLE_TELEMETRY": "1"}
    webserver = None
    try:
        with open(log, "w") as out:
            webserver = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
                 "-w", str(DEPLOY / "workspace.yaml")],
                cwd=PROJECT_ROOT, env=webserver_env, stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)  # its own process group: the code server it starts goes with it

        def graphql(query: str, **variables) -> dict:
            request = urllib.request.Request(
                f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query, "variables": variables}).encode(),
                headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=30) as response:
                body = json.loads(response.read())
            assert not body.get("errors"), body["errors"]
            return body["data"]

        def location_loaded():
            entries = graphql(WORKSPACE)["workspaceOrError"]["locationEntries"]
            if not entries or entries[0]["loadStatus"] != "LOADED":
                return None
            location = entries[0]["locationOrLoadError"]
            assert location["__typename"] == "RepositoryLocation", location
            return entries[0]

        location = wait_for("dagster-webserver", location_loaded, 120, webserver, log)
        yield {"graphql": graphql, "outcome": outcome, "lines": lines, "location": location, "root": root,
               "env": webserver_env, "connect": postgres["connect"], "home": home,
               "password": postgres["env"]["DAGSTER_PG_PASSWORD"]}
    finally:
        stop(webserver, group=True)


WORKSPACE = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""


def last(path: list[str]) -> str:
    """An asset's name without the profile prefix (keys may be ["raw_foley_data"] or ["smoke", "raw_foley_data"])."""
    return path[-1]


def test_instance_is_postgres_with_one_run_at_a_time(team_instance):
    assert team_instance["location"]["name"] == "foley"
    instance = team_instance["graphql"]("""{ instance { info runQueuingSupported
        runQueueConfig { maxConcurrentRuns } poolConfig { defaultPoolLimit } } }""")["instance"]
    assert "PostgresRunStorage" in instance["info"] and "PostgresEventLogStorage" in instance["info"]
    assert "PostgresScheduleStorage" in instance["info"]
    assert team_instance["home"].joinpath("dagster.yaml").read_text() == (DEPLOY / "dagster.yaml").read_text()
    assert team_instance["password"] not in instance["info"]  # the secret stays in the environment
    assert instance["runQueuingSupported"] and instance["runQueueConfig"]["maxConcurrentRuns"] == 1
    assert instance["poolConfig"]["defaultPoolLimit"] == 1
    # nothing went to SQLite: the history is in the database
    assert not list(team_instance["home"].rglob("*.db"))


def test_runs_are_recorded_in_postgres_and_served(team_instance):
    outcome = team_instance["outcome"]
    assert outcome.run_ids and not outcome.failed_checks, team_instance["lines"]
    runs = team_instance["graphql"]("""{ runsOrError { ... on Runs { results {
        runId status tags { key value } } } } }""")["runsOrError"]["results"]
    status = {run["runId"]: run["status"] for run in runs}
    assert set(outcome.run_ids) <= set(status)
    assert all(status[run_id] == "SUCCESS" for run_id in outcome.run_ids), status
    assert all({"key": "foley/profile", "value": "smoke"} in run["tags"] for run in runs)
    with team_instance["connect"]() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT run_id, status FROM runs")
        assert dict(cursor.fetchall()) == status  # the webserver reads exactly what is in PostgreSQL
        cursor.execute("SELECT count(*) FROM event_logs WHERE dagster_event_type = 'ASSET_MATERIALIZATION'")
        assert cursor.fetchone()[0] >= len(outcome.run_ids)


ASSET_NODES = """{ assetNodes { assetKey { path } dependencyKeys { path } opVersion isPartitioned
  assetChecksOrError { __typename ... on AssetChecks { checks { name blocking } } } } }"""


def _nodes(team_instance) -> dict[str, dict]:
    nodes = team_instance["graphql"](ASSET_NODES)["assetNodes"]
    return {last(node["assetKey"]["path"]): node for node in nodes}


def test_lineage_from_promoted_pipeline_back_to_raw_data(team_instance):
    nodes = _nodes(team_instance)
    parents = {name: {last(dep["path"]) for dep in node["dependencyKeys"]} for name, node in nodes.items()}
    assert "evaluation_metrics" in parents["promoted_pipeline"]
    assert "raw_foley_data" in parents["foley_dataset"]
    # walk upstream from the promoted model: every stage of the paper's pipeline is on the way
    seen, todo = set(), ["promoted_pipeline"]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += parents.get(name, ())
    assert seen >= {"promoted_pipeline", "evaluation_metrics", "selected_outputs", "generated_candidates",
                    "finetuned_adapter", "pretrained_ldm", "clap_embeddings", "clap_model", "foley_dataset",
                    "raw_foley_data"}, seen
    assert all(nodes[name]["opVersion"] for name in seen)  # every stage carries a code version

    # every stage was materialised with a data version and the code version it ran
    graphql = team_instance["graphql"]
    for name in seen:
        path = nodes[name]["assetKey"]["path"]
        asset = graphql("""query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
            __typename ... on Asset { assetMaterializations(limit: 100) { runId partition tags { key value } } } } }""",
                        path=path)["assetOrError"]
        assert asset["__typename"] == "Asset", (name, asset)
        materialisations = asset["assetMaterializations"]
        assert materialisations, f"{name}: no materialisation served"
        for record in materialisations:
            tags = {tag["key"]: tag["value"] for tag in record["tags"]}
            assert tags.get("dagster/data_version") and tags.get("dagster/code_version"), (name, tags)
            assert record["runId"] in team_instance["outcome"].run_ids
            assert bool(record["partition"]) == nodes[name]["isPartitioned"]


def test_quality_gate_evaluations_are_served(team_instance):
    nodes = _nodes(team_instance)
    evaluation = nodes["evaluation_metrics"]
    checks = evaluation["assetChecksOrError"]
    assert checks["__typename"] == "AssetChecks", checks
    assert {c["name"]: c["blocking"] for c in checks["checks"]} == {"no_quality_regression": True,
                                                                     "dcase_export_valid": True}
    for check in ("no_quality_regression", "dcase_export_valid"):
        executions = team_instance["graphql"]("""query($path: [String!]!, $check: String!) {
            assetCheckExecutions(assetKey: {path: $path}, checkName: $check, limit: 10) {
              runId status evaluation { success checkName } } }""",
                                              path=evaluation["assetKey"]["path"], check=check)["assetCheckExecutions"]
        assert executions, f"no evaluation of {check}"
        assert all(e["status"] == "SUCCEEDED" and e["evaluation"]["success"] for e in executions), executions
        assert executions[0]["runId"] in team_instance["outcome"].run_ids


REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name }
  sensors { name sensorState { id status } } schedules { name scheduleState { id status } } } } } }"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } } }"


def test_daemon_runs_on_the_instance_and_schedule_state_is_shared(team_instance):
    """The UI switches the schedule on (stored in PostgreSQL), and dagster-daemon, started as
    the systemd unit starts it, runs every daemon the instance requires against the same
    database. The sensors are switched off first: this test must launch no training run."""
    graphql = team_instance["graphql"]
    repository = graphql(REPOSITORY)["repositoriesOrError"]["nodes"][0]
    for sensor in repository["sensors"]:
        if sensor["sensorState"]["status"] == "RUNNING":
            stopped = graphql("""mutation($id: String!) { stopSensor(id: $id) { __typename
                ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }""",
                              id=sensor["sensorState"]["id"])["stopSensor"]
            assert stopped.get("instigationState", {}).get("status") == "STOPPED", stopped
    selector = {"repositoryLocationName": repository["location"]["name"], "repositoryName": repository["name"],
                "scheduleName": "weekly_retraining"}
    started = graphql("""mutation($selector: ScheduleSelector!) { startSchedule(scheduleSelector: $selector) {
        __typename ... on ScheduleStateResult { scheduleState { id status } } ... on PythonError { message } } }""",
                      selector=selector)["startSchedule"]
    assert started.get("scheduleState", {}).get("status") == "RUNNING", started
    with team_instance["connect"]() as connection, connection.cursor() as cursor:
        cursor.execute("SELECT instigator_body, status FROM instigators")
        states = {deserialize_value(body).instigator_name: status for body, status in cursor.fetchall()}
    assert states["weekly_retraining"] == "RUNNING"
    assert all(states[s["name"]] == "STOPPED" for s in repository["sensors"] if s["name"] in states)

    runs_before = len(graphql("{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"])
    log = team_instance["root"] / "daemon.log"
    daemon = None
    try:
        with open(log, "w") as out:
            daemon = subprocess.Popen(
                [str(Path(sys.executable).parent / "dagster-daemon"), "run", "-w", str(DEPLOY / "workspace.yaml")],
                cwd=PROJECT_ROOT, env=team_instance["env"], stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True)

        def all_healthy():
            statuses = graphql(DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            required = {s["daemonType"]: s["healthy"] for s in statuses if s["required"]}
            return required if required and all(required.values()) else None

        healthy = wait_for("dagster-daemon", all_healthy, 90, daemon, log)
        assert {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"} <= set(healthy), healthy
    finally:
        stop(daemon, group=True)
    assert len(graphql("{ runsOrError { ... on Runs { results { runId } } } }")["runsOrError"]["results"]) == runs_before
    stopped = graphql("""mutation($id: String!) { stopRunningSchedule(id: $id) {
        __typename ... on ScheduleStateResult { scheduleState { status } } } }""",
                      id=started["scheduleState"]["id"])["stopRunningSchedule"]
    assert stopped["scheduleState"]["status"] == "STOPPED", stopped
