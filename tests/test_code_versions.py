"""Code versions are derived from the code a stage may run: an edit to a module that a stage
reaches only indirectly makes that stage stale, and only it and the stages downstream of it."""

from __future__ import annotations

import ast

import pytest
from conftest import smoke_overrides

from foley_core import stages
from foley_core.core import code_version
from orchestration.definitions import build_definitions
from orchestration.freshness import is_fresh


def _edited(module_path_suffix: str, class_or_function: str):
    """A ``read_source`` that returns the real source, except that in the named module one
    definition gains a statement (as an edit to its code would)."""
    real = code_version.read_source

    def read(path):
        text = real(path)
        if not str(path).endswith(module_path_suffix):
            return text
        tree = ast.parse(text)
        target = next(n for n in tree.body if getattr(n, "name", None) == class_or_function)
        target.body.append(ast.parse("_edited_here = True").body[0])
        return ast.unparse(tree)

    return read


def _code_versions(profile_name: str, overrides: dict | None = None) -> dict[str, str]:
    code_version.forget()
    defs = build_definitions(profile_name, overrides or {})
    return {a.key.path[-1]: a.code_versions_by_key[a.key] for a in defs.assets}


def _downstream(defs, name: str) -> set[str]:
    graph = {a.key.path[-1]: {k.path[-1] for k in a.keys_by_input_name.values()} for a in defs.assets}
    found, todo = {name}, [name]
    while todo:
        current = todo.pop()
        for asset, inputs in graph.items():
            if current in inputs and asset not in found:
                found.add(asset)
                todo.append(asset)
    return found


@pytest.fixture
def forget_after():
    yield
    code_version.forget()


def test_an_indirect_edit_makes_that_stage_and_only_its_downstream_stale(monkeypatch, forget_after):
    before = _code_versions("cpu")
    # MelFrontEnd: reached by the LDM's training and by sampling, never named by stages.py itself
    monkeypatch.setattr(code_version, "read_source", _edited("foley_core/ldm/mel.py", "MelFrontEnd"))
    after = _code_versions("cpu")
    changed = {name for name in before if before[name] != after[name]}
    assert {"pretrained_ldm", "generated_candidates"} <= changed  # generated_candidates once missed ldm/mel.py
    assert not changed & {"raw_foley_data", "foley_dataset", "clap_model", "clap_embeddings"}
    assert changed <= _downstream(build_definitions("cpu", {}), "pretrained_ldm")


def test_an_edit_to_code_no_stage_reaches_changes_nothing(monkeypatch, forget_after):
    before = _code_versions("cpu")
    monkeypatch.setattr(code_version, "read_source", _edited("foley_core/stages.py", "write_report"))
    after = _code_versions("cpu")
    assert {n for n in before if before[n] != after[n]} == {"foley_report"}  # the one stage it belongs to


def test_the_modules_a_stage_runs_are_found_through_every_hop():
    modules = set(code_version.modules_run_by(stages.generate_candidates))
    # the four modules the typed list once left out
    assert {"foley_core.generation.conditioning", "foley_core.generation.adapter", "foley_core.ldm.mel",
            "foley_core.ldm.components"} <= modules
    assert {"foley_core.ldm.data", "foley_core.core.resume"} <= set(code_version.modules_run_by(stages.build_ldm))
    assert "foley_core.ldm.training" not in modules  # sampling never runs the training code


def test_sections_read_are_derived_and_where_things_go_never_counts():
    sections = frozenset({"seed", "audio", "clap", "ldm", "paths", "name", "wandb", "transfer", "classes"})
    clap = code_version.profile_sections_read_by(stages.build_clap, sections)
    assert {"audio", "clap", "classes", "seed"} <= set(clap) and not {"paths", "name", "wandb", "transfer"} & set(clap)
    assert "transfer" in code_version.profile_sections_read_by(stages.finetune_on_source, sections)
    assert "transfer" not in code_version.profile_sections_read_by(stages.build_ldm, sections)


def test_the_runner_sees_the_edited_stage_stale_and_its_upstream_fresh(smoke_run, monkeypatch, forget_after):
    overrides = smoke_overrides(smoke_run["root"])
    profile = smoke_run["profile"]

    def freshness() -> dict[str, bool]:
        code_version.forget()
        defs = build_definitions("smoke", overrides)
        by_key = {a.key: a for a in defs.assets}
        label = profile.class_names[0]
        return {a.key.path[-1]: is_fresh(profile, a, label if a.partitions_def else None, by_key)
                for a in defs.assets}

    assert all(freshness().values())  # the smoke run left every stage fresh
    monkeypatch.setattr(code_version, "read_source", _edited("foley_core/ldm/mel.py", "MelFrontEnd"))
    fresh = freshness()
    assert not fresh["pretrained_ldm"] and not fresh["generated_candidates"]
    assert fresh["raw_foley_data"] and fresh["foley_dataset"] and fresh["clap_model"] and fresh["clap_embeddings"]


def test_the_daemons_sensor_follows_the_same_rule(smoke_run, monkeypatch, forget_after):
    from dagster import DagsterInstance, RunRequest, SkipReason

    from foley_core.core.fsutil import exclusive_lock
    from foley_core.core.layout import layout
    from orchestration.automation import stale_request

    overrides, profile = smoke_overrides(smoke_run["root"]), smoke_run["profile"]
    instance = DagsterInstance.ephemeral()
    defs = build_definitions("smoke", overrides)
    fresh = stale_request(profile, list(defs.assets), instance)
    assert isinstance(fresh, SkipReason) and "every stage is fresh" in fresh.skip_message

    monkeypatch.setattr(code_version, "read_source", _edited("foley_core/ldm/mel.py", "MelFrontEnd"))
    code_version.forget()
    defs = build_definitions("smoke", overrides)
    request = stale_request(profile, list(defs.assets), instance)
    assert isinstance(request, RunRequest) and request.partition_key is None
    names = [key.path[-1] for key in request.asset_selection]
    assert names[0] == "pretrained_ldm" and "clap_model" not in names  # the first stale group, from the edit on
    assert stale_request(profile, list(defs.assets), instance).run_key == request.run_key  # same state, same key
    with exclusive_lock(layout(profile).run_lock):  # a `foley run` at work brings everything up to date itself
        assert "foley run is using" in stale_request(profile, list(defs.assets), instance).skip_message
