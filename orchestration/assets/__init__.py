"""The asset graph: one Dagster asset per ``foley_core.stages`` function.

Every asset key carries the profile as its prefix (``cpu/clap_model``, ``smoke/clap_model``),
so each profile has its own history in one instance. Upstream results arrive as inputs (the
``Artifact`` records the IO manager stores); each body is one call into ``foley_core`` plus
metadata; the returned ``Artifact`` records which input versions it was made from.
"""

from __future__ import annotations

import os
from contextlib import ExitStack, contextmanager
from pathlib import Path

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from foley_core.core.config import Profile
from foley_core.core.env import RETRAIN
from foley_core.core.fsutil import (
    LockHeld,
    describe_holder,
    exclusive_lock,
    held_by_this_process,
    lock_holder,
    who_holds,
)
from foley_core.core.layout import layout
from foley_core.core.records import Artifact, input_versions
from foley_core.stages import StageResult
from orchestration.automation import FOLEY_HOST_TAG, FOLEY_RETRAIN_TAG, FOLEY_RUN_TAG

# The tag Dagster sets on a re-execution launched from the UI (its value is public; its constant lives in a
# private module, which may move in any release)
PARENT_RUN_ID_TAG = "dagster/parent_run_id"


@contextmanager
def retraining(force: bool):
    """``--force`` means retrain: the library's training caches are bypassed while this is held
    (``foley_core.core.env.retrain_requested``), not merely the Dagster materialisations repeated."""
    previous = os.environ.get(RETRAIN)
    if force:
        os.environ[RETRAIN] = "1"
    try:
        yield
    finally:
        if previous is None:
            os.environ.pop(RETRAIN, None)
        else:
            os.environ[RETRAIN] = previous


@contextmanager
def artifacts_lock(context: AssetExecutionContext, profile: Profile):
    """One writer per artifacts folder: a stage launched by the UI, a schedule or a sensor waits
    while a `foley run` (or another such stage) uses the folder. Inside `foley run`, which holds
    the lock for its whole duration, stages run under its hold.

    A step of a `foley run` that a worker executes (FOLEY_EXECUTOR=celery, docs/scaling.md) runs
    under that run's hold too, since the run launched it; it holds the lock of its own asset and
    partition besides, and refuses at once if another process holds that: two workers never write
    one class."""
    path = layout(profile).run_lock
    if held_by_this_process(path):
        yield
        return
    if _held_by_the_launching_run(context, path):
        partition = context.partition_key if context.has_partition_key else None
        name = context.asset_key.path[-1] + (f"[{partition}]" if partition else "")
        with ExitStack() as stack:
            try:
                stack.enter_context(exclusive_lock(layout(profile).step_lock(name), timeout=0))
            except LockHeld as exc:
                raise RuntimeError(f"{name} is already being written by {describe_holder(exc.holder)}") from None
            stack.enter_context(retraining(context.run.tags.get(FOLEY_RETRAIN_TAG) == "1"))
            yield
        return
    holder = who_holds(path)
    if holder is not None:
        context.log.info(f"waiting for {holder} to finish with {path.parent}")
    with exclusive_lock(path):
        yield


def _held_by_the_launching_run(context: AssetExecutionContext, path: Path) -> bool:
    """True when the `foley run` that launched this step's run (its pid and host in the run's
    tags) holds the artifacts lock right now."""
    tags = getattr(getattr(context, "run", None), "tags", None) or {}  # none: not launched by a run
    holder = lock_holder(path)
    if not holder or not tags.get(FOLEY_RUN_TAG) or PARENT_RUN_ID_TAG in tags:
        return False  # a re-execution from the UI copies the tags, but no `foley run` launched it
    launched_by = (str(holder.get("pid")), holder.get("host")) == (tags[FOLEY_RUN_TAG], tags.get(FOLEY_HOST_TAG))
    return launched_by and who_holds(path) is not None


def stage_output(context: AssetExecutionContext, result: StageResult, **inputs) -> MaterializeResult:
    """The stage's record (with its input versions) as the asset's output, plus UI metadata."""
    key = context.asset_key
    partition = context.partition_key if context.has_partition_key else None
    made_from = input_versions(inputs)
    artifact = Artifact(name=key.path[-1], version=result.version, path=str(result.path), partition=partition,
                        code_version=context.assets_def.code_versions_by_key.get(key) or "", inputs=made_from)
    metadata = {k: v for k, v in result.metadata.items() if v is not None}
    metadata.update({k: MetadataValue.md(v) for k, v in result.markdown.items()})
    metadata["path"] = MetadataValue.path(str(result.path))
    if made_from:
        metadata["made_from"] = MetadataValue.json(made_from)
    return MaterializeResult(value=artifact, data_version=DataVersion(result.version), metadata=metadata)


def run_stage(context: AssetExecutionContext, foley, stage, *args, **inputs) -> MaterializeResult:
    """``stage(profile, *args)`` under the artifacts lock, returned as the asset's output."""
    profile = foley.load()
    with artifacts_lock(context, profile):
        result = stage(profile, *args)
    return stage_output(context, result, **inputs)
