"""The pipeline's assets for one profile, wired by name through their inputs:

    raw_foley_data -> foley_dataset[class] -> clap_model -> clap_embeddings[class] -> pretrained_ldm
    -> finetuned_adapter -> class_prompts -> generated_candidates[class] -> selected_outputs[class]
    -> evaluation_metrics (+ blocking checks) -> promoted_pipeline -> foley_report

and, when the profile names ``transfer.source`` (a folder of the user's own recordings):

    own_recordings -> finetuned_model (+ non-blocking check) <- promoted_pipeline
"""


import json
import re

from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetExecutionContext,
    AssetIn,
    AssetKey,
    AssetsDefinition,
    StaticPartitionMapping,
    StaticPartitionsDefinition,
    asset,
    asset_check,
)

from foley_core import registry, stages
from foley_core.core.config import Profile
from foley_core.core.layout import layout
from foley_core.core.records import Artifact
from foley_core.data.own import recordings_source
from foley_core.data.sources import partition_keys
from foley_core.evaluation import read_json
from foley_core.export import validate_dcase
from foley_core.transfer import RESULT
from orchestration.assets import artifacts_lock, run_stage, stage_output
from orchestration.resources import FoleyProfile
from orchestration.versions import code_version

COMPUTE = "compute"  # the pool of training and sampling stages: one at a time (dagster.yaml)


def asset_prefix(profile: Profile) -> str:
    """The profile's asset-key prefix: its name, with anything Dagster refuses in a key as ``_``."""
    return re.sub(r"[^A-Za-z0-9_]", "_", profile.name)


def build_assets(profile: Profile) -> tuple[list[AssetsDefinition], list]:
    prefix = asset_prefix(profile)
    dataset_parts = StaticPartitionsDefinition(partition_keys(profile))
    class_parts = StaticPartitionsDefinition(profile.class_names)
    same_class = StaticPartitionMapping({c: c for c in profile.class_names})

    def version(stage) -> str:
        return code_version(profile, stage)

    def key(name: str) -> AssetKey:
        return AssetKey([prefix, name])

    def ins(*names: str) -> dict[str, AssetIn]:
        return {name: AssetIn(key(name)) for name in names}

    common = {"key_prefix": [prefix]}

    def snapshot_output(context: AssetExecutionContext, foley: FoleyProfile, snapshot):
        """A data snapshot stage (``snapshot(profile) -> (StageResult, warnings)``) under the artifacts lock."""
        prof = foley.load()
        with artifacts_lock(context, prof):
            result, warnings = snapshot(prof)
        for warning in warnings:
            context.log.warning(warning)
        return stage_output(context, result)

    @asset(**common, group_name="data",
           code_version=version(stages.snapshot_data),
           description="The DVC-tracked raw data (data/): synthetic corpus, DCASE dev set, captioned corpora. "
                       "Its version covers this profile's sources only.")
    def raw_foley_data(context: AssetExecutionContext, foley: FoleyProfile):
        return snapshot_output(context, foley, stages.snapshot_data)

    own = []  # the transfer step's assets: only when the profile names a folder of its own recordings
    if profile.transfer.source:
        @asset(**common, group_name="data",
               code_version=version(stages.snapshot_own_recordings),
               description="The profile's own recordings (transfer.source): mirrored into data/own/ and tracked "
                           "when DVC tracks data/, else versioned by content hash.")
        def own_recordings(context: AssetExecutionContext, foley: FoleyProfile):
            return snapshot_output(context, foley, stages.snapshot_own_recordings)

        own.append(own_recordings)

    @asset(**common, ins=ins("raw_foley_data"), group_name="data", partitions_def=dataset_parts,
           code_version=version(stages.ingest_dataset_class),
           description="Normalised clip-length clips + manifest for one class; bad files quarantined with a reason.")
    def foley_dataset(context: AssetExecutionContext, foley: FoleyProfile, raw_foley_data: Artifact):
        return run_stage(context, foley, stages.ingest_dataset_class, context.partition_key,
                            raw_foley_data=raw_foley_data)

    @asset(**common, ins=ins("foley_dataset"), group_name="models", pool=COMPUTE,
           code_version=version(stages.build_clap),
           description="CLAP text + audio encoders in one space: trained contrastively here, or a LAION checkpoint.")
    def clap_model(context: AssetExecutionContext, foley: FoleyProfile, foley_dataset: dict):
        return run_stage(context, foley, stages.build_clap, foley_dataset=foley_dataset)

    @asset(**common, ins=ins("clap_model", "foley_dataset"), group_name="models", partitions_def=dataset_parts,
           code_version=version(stages.embed_class),
           description="Cached CLAP audio embeddings of every clip and text embeddings of captions and prompts, "
                       "keyed by (CLAP version, clip content hash).")
    def clap_embeddings(context: AssetExecutionContext, foley: FoleyProfile, clap_model: Artifact,
                        foley_dataset: Artifact):
        return run_stage(context, foley, stages.embed_class, context.partition_key,
                            clap_model=clap_model, foley_dataset=foley_dataset)

    @asset(**common, ins=ins("clap_model", "clap_embeddings"), group_name="models", pool=COMPUTE,
           code_version=version(stages.build_ldm),
           description="VAE + UNet + vocoder pre-trained on every clip (the UNet conditioned on its CLAP audio "
                       "embedding), or imported from an AudioLDM folder.")
    def pretrained_ldm(context: AssetExecutionContext, foley: FoleyProfile, clap_model: Artifact,
                       clap_embeddings: dict):
        return run_stage(context, foley, stages.build_ldm, clap_model=clap_model,
                            clap_embeddings=clap_embeddings)

    @asset(**common, ins=ins("pretrained_ldm", "clap_embeddings"), group_name="models", pool=COMPUTE,
           code_version=version(stages.finetune_adapters),
           description="The paper's d x d embedding adapter fine-tuned on the target classes, and the identity "
                       "ablation (same seed and steps, adapter frozen).")
    def finetuned_adapter(context: AssetExecutionContext, foley: FoleyProfile, pretrained_ldm: Artifact,
                          clap_embeddings: dict):
        return run_stage(context, foley, stages.finetune_adapters, pretrained_ldm=pretrained_ldm,
                            clap_embeddings=clap_embeddings)

    @asset(**common, ins=ins("finetuned_adapter", "clap_embeddings"), group_name="generation", pool=COMPUTE,
           code_version=version(stages.choose_prompts),
           description="The best prompt per class: the configured prompts, the held-out paraphrases and the "
                       "user's extra_prompts each generate a few clips, scored against the class's training clips "
                       "(closer to its own class than to any other); generation uses each class's winner.")
    def class_prompts(context: AssetExecutionContext, foley: FoleyProfile, finetuned_adapter: Artifact,
                      clap_embeddings: dict):
        return run_stage(context, foley, stages.choose_prompts, finetuned_adapter=finetuned_adapter,
                         clap_embeddings=clap_embeddings)

    @asset(**common, group_name="generation", pool=COMPUTE, partitions_def=class_parts,
           ins={"finetuned_adapter": AssetIn(key("finetuned_adapter")),
                "class_prompts": AssetIn(key("class_prompts")),
                "clap_embeddings": AssetIn(key("clap_embeddings"), partition_mapping=same_class)},
           code_version=version(stages.generate_candidates),
           description="N candidates per clip in one batch, scored by CLAP; best kept (floor/ceiling, regeneration, "
                       "multi-target). Made with the fine-tuned adapter and with the identity ablation, same seeds.")
    def generated_candidates(context: AssetExecutionContext, foley: FoleyProfile, finetuned_adapter: Artifact,
                             class_prompts: Artifact, clap_embeddings: Artifact):
        return run_stage(context, foley, stages.generate_candidates, context.partition_key,
                            finetuned_adapter=finetuned_adapter, class_prompts=class_prompts,
                            clap_embeddings=clap_embeddings)

    @asset(**common, ins=ins("generated_candidates"), group_name="generation", partitions_def=class_parts,
           code_version=version(stages.export_class),
           description="The selected clips in the DCASE layout: 22,050 Hz, mono, 16-bit, exactly 4 s.")
    def selected_outputs(context: AssetExecutionContext, foley: FoleyProfile, generated_candidates: Artifact):
        return run_stage(context, foley, stages.export_class, context.partition_key,
                            generated_candidates=generated_candidates)

    @asset(**common, ins=ins("selected_outputs", "generated_candidates"), group_name="evaluation",
           code_version=version(stages.evaluate),
           description="FAD/KAD of generated clips to held-out clips per class (the report says which clips), class "
                       "consistency, the {selection off, on} x {adapter off, on} ablation on the same seeds, and the "
                       "official DCASE FAD when VGGish weights are configured.")
    def evaluation_metrics(context: AssetExecutionContext, foley: FoleyProfile, selected_outputs: dict,
                           generated_candidates: dict):
        return run_stage(context, foley, stages.evaluate, selected_outputs=selected_outputs,
                            generated_candidates=generated_candidates)

    @asset_check(asset=evaluation_metrics, blocking=True,
                 description="DCASE export valid for every class (rate, channels, bit depth, length, count).")
    def dcase_export_valid(foley: FoleyProfile) -> AssetCheckResult:
        prof = foley.load()
        problems = validate_dcase(layout(prof).dcase, classes=prof.class_names,
                                  clips_per_class=prof.generation.clips_per_class)
        return AssetCheckResult(passed=not problems, metadata={
            "problems": len(problems), "first": "; ".join(f"{p.path}: {p.problem}" for p in problems[:5])})

    @asset_check(asset=evaluation_metrics, blocking=True,
                 description="Mean FAD/KAD finite and not worse than the last accepted model beyond the margin.")
    def no_quality_regression(foley: FoleyProfile) -> AssetCheckResult:
        prof = foley.load()
        current = read_json(layout(prof).metrics) or {}
        accepted = registry.accepted_metrics(prof)
        problems = registry.quality_problems(prof, current)
        return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.ERROR, metadata={
            "problems": "; ".join(problems) or "none", "accepted_model": (accepted or {}).get("model_version", "none yet")})

    @asset(**common, ins=ins("evaluation_metrics"), group_name="evaluation",
           code_version=version(stages.promote_model),
           description="The model the CLI uses (`latest`): promoted only if the gate passes. The gate is re-applied "
                       "here on the evaluation it receives, so no launch path promotes a rejected or NaN model.")
    def promoted_pipeline(context: AssetExecutionContext, foley: FoleyProfile, evaluation_metrics: Artifact):
        prof = foley.load()
        with artifacts_lock(context, prof):
            result = stages.promote_model(prof, evaluation_metrics.location)
        if not result.metadata["promoted"]:
            context.log.warning(result.metadata["reasons"])
        return stage_output(context, result, evaluation_metrics=evaluation_metrics)

    @asset(**common, ins=ins("promoted_pipeline", "evaluation_metrics"), group_name="evaluation",
           code_version=version(stages.write_report),
           description="outputs/<run-id>/: the report to listen to (clips, spectrograms, metrics, lineage), the "
                       "DCASE clips and metrics; outputs/latest points at the newest.")
    def foley_report(context: AssetExecutionContext, foley: FoleyProfile, promoted_pipeline: Artifact,
                     evaluation_metrics: Artifact):
        return run_stage(context, foley, stages.write_report, context.run_id,
                            promoted_pipeline=promoted_pipeline, evaluation_metrics=evaluation_metrics)

    transfer, transfer_checks = [], []
    if profile.transfer.source:
        @asset(**common, ins=ins("promoted_pipeline", "own_recordings"), group_name="transfer", pool=COMPUTE,
               code_version=version(stages.finetune_on_source),
               description="The accepted model fine-tuned on own_recordings (CLAP audio tower, adapter / UNet / "
                           "vocoder per transfer.train), promoted only if its clips are closer to held-out "
                           "recordings than the base's. A refusal is not a failure: the base stays in use.")
        def finetuned_model(context: AssetExecutionContext, foley: FoleyProfile, promoted_pipeline: Artifact,
                            own_recordings: Artifact):
            prof = foley.load()
            with artifacts_lock(context, prof):
                result = stages.finetune_on_source(prof, own_recordings.location)
            if not result.metadata["promoted"]:
                context.log.warning(result.metadata["reasons"])
            return stage_output(context, result, promoted_pipeline=promoted_pipeline, own_recordings=own_recordings)

        @asset_check(asset=finetuned_model, blocking=False,
                     description="The fine-tuned model beat the base on the held-out recordings (mean FAD and KAD).")
        def transfer_gate(foley: FoleyProfile) -> AssetCheckResult:
            prof = foley.load()
            path = layout(prof).transfer(recordings_source(prof).name) / RESULT
            if not path.is_file():
                return AssetCheckResult(passed=False, severity=AssetCheckSeverity.WARN,
                                        metadata={"problems": f"no fine-tune recorded at {path}"})
            record = json.loads(path.read_text())
            problems = record["gate"]["problems"]
            return AssetCheckResult(passed=not problems, severity=AssetCheckSeverity.WARN, metadata={
                "problems": "; ".join(problems) or "none", "finetuned_model": record["model_version"],
                "base_model": record["base_model_version"]})

        transfer, transfer_checks = [finetuned_model], [transfer_gate]

    assets = [raw_foley_data, *own, foley_dataset, clap_model, clap_embeddings, pretrained_ldm, finetuned_adapter,
              class_prompts, generated_candidates, selected_outputs, evaluation_metrics, promoted_pipeline, foley_report, *transfer]
    return assets, [dcase_export_valid, no_quality_regression, *transfer_checks]
