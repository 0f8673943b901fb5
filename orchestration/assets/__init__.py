"""The asset graph: one Dagster asset per ``foley_core.stages`` function.

Every asset key carries the profile as its prefix (``cpu/clap_model``, ``smoke/clap_model``),
so each profile has its own history in one instance. Upstream results arrive as inputs (the
``Artifact`` records the IO manager stores); each body is one call into ``foley_core`` plus
metadata; the returned ``Artifact`` records which input versions it was made from.
"""

from __future__ import annotations

from contextlib import contextmanager

from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from foley_core.core.config import Profile
from foley_core.core.fsutil import exclusive_lock, held_by_this_process, who_holds
from foley_core.core.layout import layout
from foley_core.core.records import Artifact, input_versions
from foley_core.stages import StageResult


@contextmanager
def artifacts_lock(context: AssetExecutionContext, profile: Profile):
    """One writer per artifacts folder: a stage launched by the UI, a schedule or a sensor waits
    while a `foley run` (or another such stage) uses the folder. Inside `foley run`, which holds
    the lock for its whole duration, stages run under its hold."""
    path = layout(profile).run_lock
    if held_by_this_process(path):
        yield
        return
    holder = who_holds(path)
    if holder is not None:
        context.log.info(f"waiting for {holder} to finish with {path.parent}")
    with exclusive_lock(path):
        yield


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
