"""The whole transfer step: ingest, train a candidate, gate, promote (resumable, reused when fresh)."""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from pathlib import Path

from transformers import SpeechT5HifiGan

from foley_core.clap.encoder import TrainedClapEncoder
from foley_core.core.code_version import source_version
from foley_core.core.config import Profile
from foley_core.core.env import retrain_requested
from foley_core.core.fsutil import staged_dir, write_text_atomic
from foley_core.core.hashing import folder_hash, json_hash, sha256_hex
from foley_core.core.layout import CLASS_MODELS, PIPELINE_CONFIG, TRANSFER_RECORD, layout
from foley_core.generation.pipeline import FoleyPipeline, place
from foley_core.ldm.training import fresh_if_retraining
from foley_core.registry import base_pipeline_dir, promote_finetuned
from foley_core.transfer.gating import GateRefused, gate
from foley_core.transfer.recordings import SourceData, ingest_recordings
from foley_core.transfer.training import (
    KEPT_VOCODER,
    adapt_clap,
    choose_vocoders,
    finetune_generator,
    finetune_vocoder,
)

log = logging.getLogger(__name__)

TRAIN_CHOICES = ("adapter", "unet", "all")
RESULT = TRANSFER_RECORD  # the fine-tune's record (named in layout)


# ---------------------------------------------------------------- the whole step
def _fingerprint(profile: Profile, base_version: str, data: SourceData, train_what: str) -> str:
    code = source_version(finetune_on_recordings)
    settings = [profile.transfer.model_dump(mode="json", exclude={"source"}), profile.seed, train_what,
                base_version, data.version, code]
    return json_hash(settings)[:16]


def _base_model(profile: Profile) -> tuple[Path, dict]:
    """The accepted base model (never a fine-tune: fine-tunes do not stack) and its config."""
    folder = base_pipeline_dir(profile)
    config = json.loads((folder / PIPELINE_CONFIG).read_text())
    if config.get("transfer"):  # a registry from before ``base`` was recorded: latest was a fine-tune
        base = folder.parent / config["transfer"]["base_model_version"]
        if base.is_dir():
            return base, json.loads((base / PIPELINE_CONFIG).read_text())
    return folder, config


def finetune_on_recordings(profile: Profile, source: Path, train_what: str | None = None) -> dict:
    """Ingest, fine-tune, gate and (if it passes) promote; returns the result record.

    Raises ``GateRefused`` (after writing the record) when the fine-tuned model is not better."""
    train_what = train_what or profile.transfer.train
    if train_what not in TRAIN_CHOICES:
        raise ValueError(f"--train must be one of {', '.join(TRAIN_CHOICES)}, got {train_what!r}")
    started = time.perf_counter()
    data = ingest_recordings(profile, source)
    base_dir, base_config = _base_model(profile)
    base_version = base_config.get("model_version", base_dir.name)
    work = layout(profile).transfer(data.name)
    key = _fingerprint(profile, base_version, data, train_what)
    candidate_dir = work / "model"
    previous = _read(work / RESULT)
    if previous and previous.get("fingerprint") == key and candidate_dir.is_dir() and not retrain_requested():
        record = previous
        log.info(f"fine-tune of {base_version} on {data.name} is up to date")
    else:
        base = place(FoleyPipeline.from_pretrained(base_dir, profile), profile.generation)
        record = _train_candidate(profile, base, base_dir, data, train_what, work, candidate_dir, key)
        record.update(fingerprint=key, base_model_version=base_version, source=str(data.root), source_name=data.name,
                      source_data_version=data.version, train=train_what, classes=data.classes,
                      source_dvc_version=data.data_version,
                      settings=profile.transfer.model_dump(mode="json"),
                      split={c: {s: int(n) for s, n in g["split"].value_counts().items()}
                             for c, g in data.manifest.groupby("class")})
        record["gate"] = gate(profile, base_dir, candidate_dir, data, work)
        record["model_version"] = _version(candidate_dir, base_version)
        record["seconds"] = round(time.perf_counter() - started, 1)
        write_text_atomic(work / RESULT, json.dumps(record, indent=2, sort_keys=True))
    record["quarantined"] = [{"path": q.path, "reason": q.reason} for q in data.quarantined]
    if record["gate"]["problems"]:
        raise GateRefused(f"fine-tuned model {record['model_version']} not promoted: "
                          f"{'; '.join(record['gate']['problems'])}; {base_version} stays in use")
    record["promoted_to"] = str(promote_finetuned(profile, base_dir, base_config, candidate_dir, record))
    return record


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def _version(candidate_dir: Path, base_version: str) -> str:

    return "ft-" + sha256_hex(folder_hash(candidate_dir, "*.safetensors") + base_version)[:16]


def _train_candidate(profile: Profile, base, base_dir: Path, data: SourceData, train_what: str, work: Path,
                     candidate_dir: Path, key: str) -> dict:
    """Adapt the CLAP, fine-tune the generator, save the candidate pipeline; returns the training record."""
    record: dict = {}
    # Checkpoints are resumed only by a run of the same base, data, settings and code: an
    # interrupted fine-tune continues, a different one starts afresh.
    training = fresh_if_retraining(work / "training" / key)
    for stale in (work / "training").glob("*"):
        if stale.name != key and stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
    clap_dir = work / "clap"
    if base.clap_source == "trained":
        record["clap"] = adapt_clap(profile, base_dir / "clap", data, clap_dir)
        clap = TrainedClapEncoder.load(clap_dir if record["clap"]["kept"] else base_dir / "clap")
    else:  # a LAION checkpoint was trained on millions of real clips: it already knows real sounds
        record["clap"] = {"kept": False, "reason": f"the {base.clap_source} CLAP is used as it is"}
        clap = base.clap
    run, adapter, unet = finetune_generator(profile, base, data.train, train_what, training)
    record["generator"] = run
    ldm = base.ldm
    if unet is not None:
        ldm = dataclasses.replace(ldm, unet=unet)
    if train_what == "all" and base.ldm.vocoder is not None:
        vocoder_dir = work / "vocoder"
        record["vocoder"] = {k: v for k, v in finetune_vocoder(profile, base, data.train, training / "vocoder",
                                                               vocoder_dir).items() if not isinstance(v, (bytes, dict))}
        ldm = dataclasses.replace(ldm, vocoder=SpeechT5HifiGan.from_pretrained(vocoder_dir, use_safetensors=True))
    def pipeline(with_ldm):
        return FoleyPipeline(clap, adapter, with_ldm, sampler=base.sampler, steps=base.steps, clap_source=base.clap_source,
                             conditioner=base.conditioner, convention=base.convention)

    with staged_dir(candidate_dir) as staging:
        clap_folder = (clap_dir if record["clap"].get("kept") else base_dir / "clap") if base.clap_source == "trained" else None
        pipeline(ldm).save_pretrained(staging, clap_folder=clap_folder)
        routes: dict[str, str | None] = {label: None for label in data.classes}  # None: the folder's own model
        if "vocoder" in record:
            kept = staging / CLASS_MODELS / KEPT_VOCODER
            pipeline(dataclasses.replace(ldm, vocoder=base.ldm.vocoder)).save_pretrained(kept, clap_folder=clap_folder)
            record["vocoder"]["choice"] = choose_vocoders(profile, staging, kept, data)
            routes.update({label: KEPT_VOCODER for label, row in record["vocoder"]["choice"].items()
                           if row["vocoder"] == "base"})
            if KEPT_VOCODER not in routes.values():
                shutil.rmtree(staging / CLASS_MODELS)
        config = json.loads((staging / PIPELINE_CONFIG).read_text())
        config["class_models"] = routes  # read by pipeline_for_class, in the gate and after promotion
        write_text_atomic(staging / PIPELINE_CONFIG, json.dumps(config, indent=2, sort_keys=True))
    return record

