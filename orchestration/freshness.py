"""The one freshness rule, used by `foley run` and by the daemon's ``retrain_when_changed`` sensor.

A stage (partition) is fresh when its stored record (``foley_core.core.records``) has the asset's
current code version and was made from the current versions of its inputs. A stage that
re-ran and wrote the same content keeps its version, so the stages after it stay fresh: a data
change in one class retrains what depends on it and stops wherever a stage comes out unchanged.

Dagster's own code and data versions are written on every materialisation (the UI shows them),
but nothing decides on them: the records are the one source of truth, so a run launched by
`foley run`, by the sensor or by a click in the UI is judged the same way.
"""

from __future__ import annotations

from typing import Callable, Iterator

from dagster import AssetKey, AssetsDefinition

from foley_core.core.config import Profile
from foley_core.core.layout import layout
from foley_core.core.records import Artifact, input_versions, read_record

# Snapshots of data outside the artifacts (data/, transfer.source): `foley run` always runs them,
# they are the cheap check that the data did not change (the daemon has sensors for that)
SNAPSHOTS = ("raw_foley_data", "own_recordings")
# Run on their own, after the group before them: their freshness is judged on what that group just
# promoted (within one group, freshness is judged before any of it runs)
RUN_ALONE = ("finetuned_model",)


def groups(assets: list[AssetsDefinition]) -> list[tuple[list[AssetsDefinition], object]]:
    """Assets in dependency order (as built), consecutive ones with the same partitioning grouped:
    each group runs as one Dagster run per partition."""
    found: list[tuple[list[AssetsDefinition], object]] = []
    for assets_def in assets:
        if found and found[-1][1] == assets_def.partitions_def and assets_def.key.path[-1] not in RUN_ALONE:
            found[-1][0].append(assets_def)
        else:
            found.append(([assets_def], assets_def.partitions_def))
    return found


def current_inputs(profile: Profile, assets_def: AssetsDefinition, partition: str | None,
                   by_key: dict[AssetKey, AssetsDefinition]) -> dict[str, str] | None:
    """The input versions the stage would be given now (as the IO manager loads them), or None
    when an input has no record yet."""
    where = layout(profile)
    inputs: dict[str, Artifact | dict[str, Artifact]] = {}
    for dep in assets_def.asset_deps[assets_def.key]:
        upstream = by_key[dep]
        name = dep.path[-1]
        if upstream.partitions_def is None:
            inputs[name] = read_record(where.record(name))
        elif partition is not None:  # per-class stage reads the same class upstream
            inputs[name] = read_record(where.record(name, partition))
        else:
            inputs[name] = {p: read_record(where.record(name, p)) for p in upstream.partitions_def.get_partition_keys()}
        values = inputs[name].values() if isinstance(inputs[name], dict) else [inputs[name]]
        if any(v is None for v in values):
            return None
    return input_versions(inputs)


def is_fresh(profile: Profile, assets_def: AssetsDefinition, partition: str | None,
             by_key: dict[AssetKey, AssetsDefinition]) -> bool:
    """Stored record with the current code version, made from the current input versions."""
    record = read_record(layout(profile).record(assets_def.key.path[-1], partition))
    if record is None or record.code_version != (assets_def.code_versions_by_key.get(assets_def.key) or ""):
        return False
    return record.inputs == current_inputs(profile, assets_def, partition, by_key)


def stale_in_group(group: list[AssetsDefinition], fresh: Callable[[AssetsDefinition], bool], force: bool = False,
                   snapshots: bool = True) -> list[AssetsDefinition]:
    """The assets of a group (in dependency order) to run: every one when forced, the snapshots
    (unless ``snapshots`` is False), the ones ``fresh`` rejects, and everything downstream of
    those inside the group. Freshness is read before any of the group runs, so an asset whose
    upstream in the group is about to change still looks fresh against the upstream's old output."""
    todo: list[AssetsDefinition] = []
    for a in group:
        upstream_stale = any(k in {t.key for t in todo} for k in a.keys_by_input_name.values())
        snapshot = snapshots and a.key.path[-1] in SNAPSHOTS
        if force or snapshot or upstream_stale or not fresh(a):
            todo.append(a)
    return todo


def stale_work(profile: Profile, assets: list[AssetsDefinition],
               ) -> Iterator[tuple[list[AssetsDefinition], str | None]]:
    """(assets to run, partition) for every group and partition with a stale asset, in order. A
    snapshot runs here only when its own code changed (new data is the data sensors' to notice).
    Later groups are judged on the records as they are now: after the first of these runs, ask
    again."""
    by_key = {a.key: a for a in assets}
    for group, partitions_def in groups(assets):
        for partition in partitions_def.get_partition_keys() if partitions_def else [None]:
            todo = stale_in_group(group, lambda a: is_fresh(profile, a, partition, by_key), snapshots=False)
            if todo:
                yield todo, partition
