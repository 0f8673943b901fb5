"""The model registry: which model versions were accepted, on which metrics, and which one
`foley generate` serves. The one place that promotes, gates, and points ``latest``.

    pipelines/
      <model_version>/           a promoted model: pipeline.json, metrics.json, files.json (content hashes)
      latest -> <model_version>  the served model: a base model, or a fine-tune of one
      base   -> <model_version>  the accepted base model (what the main graph's gate compares against)
      accepted_metrics.json      the accepted base's evaluation (the main gate's reference)
      served.json                what ``latest`` serves and the metrics it was accepted on
      .lock                      held while a model is promoted

Two ways in, one rule each:

- ``promote_base``: the main graph's evaluated model. It must pass ``gate_problems`` against
  ``accepted_metrics.json`` (export valid, mean FAD/KAD finite and not worse beyond the margin).
  It becomes the accepted base. It becomes the served model too, unless the served model is a
  fine-tune on the user's own recordings: that one keeps serving (a base that never heard the
  user's recordings must not silently replace one that did) until it is fine-tuned again on
  the new base, which ``finetuned_model`` does at once when the profile names
  ``transfer.source``, and `foley finetune SOURCE` does by hand.
- ``promote_finetuned``: a fine-tune that beat its base on held-out recordings
  (``foley_core.transfer.gating``). It becomes the served model; the accepted base is unchanged.

Every promoted folder records each file's content hash (``files.json``); ``verify_model`` checks
them before a model is loaded, so a damaged or missing file is a one-line error that names it.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np

from foley_core.core.fsutil import exclusive_lock, replace_symlink, staged_dir, write_text_atomic
from foley_core.core.hashing import file_hash
from foley_core.core.layout import (
    ACCEPTED,
    BASE,
    CLASS_MODELS,
    FILES,
    LATEST,
    METRICS,
    PIPELINE_CONFIG,
    SERVED,
    layout,
)
from foley_core.core.layout import PIPELINES_LOCK as LOCK

BASE_MODEL = "base"  # the route name of the base model inside a fine-tuned folder


class PromotionRefused(ValueError):
    """The quality gate rejected the model: ``latest`` and the accepted metrics did not move."""


class DamagedModel(OSError):
    """A promoted model's file is missing or not the file that was promoted."""


# ---------------------------------------------------------------- the gate
def regression(current: dict, accepted: dict | None, margin: float, keys=("kad", "fad")) -> list[str]:
    """Messages for each mean metric that is missing or not finite, or that got worse than
    ``accepted`` by more than ``margin`` (relative). NaN never passes (``nan > limit`` is False,
    so it must be refused explicitly)."""
    problems = []
    for key in keys:
        new = current.get(key)
        if new is None or not np.isfinite(new):
            problems.append(f"mean {key} is {new}: not a finite number")
            continue
        old = (accepted or {}).get(key)
        if old is None or not np.isfinite(old):
            continue  # nothing accepted yet to compare with
        limit = old + margin * abs(old)
        if new > limit:
            problems.append(f"mean {key} {new:.4g} > accepted {old:.4g} + {margin:.0%} margin")
    return problems


def gate_problems(metrics: dict, accepted: dict | None, margin: float, export_problems: int) -> list[str]:
    """The promotion rule of the main graph. Empty list = the model may be promoted."""
    problems = [f"the DCASE export has {export_problems} format problem(s)"] if export_problems else []
    return problems + regression(metrics.get("mean", {}), accepted and accepted.get("mean"), margin)


def quality_problems(profile, metrics: dict) -> list[str]:
    """The gate's quality half against what is accepted now (the blocking check shows it)."""
    return gate_problems(metrics, accepted_metrics(profile), profile.evaluation.regression_margin, export_problems=0)


# ---------------------------------------------------------------- reading the registry
def pipelines_dir(profile) -> Path:
    return layout(profile).pipelines


def _read(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.is_file() else None


def accepted_metrics(profile) -> dict | None:
    """The accepted base model's evaluation: the reference of the main graph's gate."""
    return _read(pipelines_dir(profile) / ACCEPTED)


def served(profile) -> dict | None:
    """What ``latest`` serves: ``{"model_version", "kind": "base" | "finetuned", "base_model_version",
    "accepted": the metrics it was accepted on}``. Registries older than this file serve their base."""
    record = _read(pipelines_dir(profile) / SERVED)
    if record is None and (base := accepted_metrics(profile)) is not None:
        return {"model_version": base["model_version"], "kind": "base", "base_model_version": base["model_version"],
                "accepted": base}
    return record


def _is_complete(folder: Path) -> bool:
    # metrics.json is written last but one (files.json after it); a folder renamed in from staging has both
    return (folder / PIPELINE_CONFIG).is_file() and (folder / METRICS).is_file()


def _linked(profile, link: str) -> Path:
    path = pipelines_dir(profile) / link
    if not path.exists():
        raise FileNotFoundError(f"no trained model for profile {profile.name!r} yet: run `foley run --profile {profile.name}`")
    folder = path.resolve()
    if not _is_complete(folder):  # only folders written in place before staging existed can be half-made
        raise FileNotFoundError(f"the {link} model {folder} is incomplete (no {PIPELINE_CONFIG} or {METRICS}): "
                                f"run `foley run --profile {profile.name}` again")
    return verify_model(folder)


def latest_pipeline_dir(profile) -> Path:
    """The served model's folder, its files checked against the hashes recorded at promotion."""
    return _linked(profile, LATEST)


def base_pipeline_dir(profile) -> Path:
    """The accepted base model's folder (what a fine-tune starts from)."""
    return _linked(profile, BASE if (pipelines_dir(profile) / BASE).exists() else LATEST)


def verify_model(folder: Path) -> Path:
    """``folder`` if every file recorded at promotion is there with its content hash; else
    ``DamagedModel`` naming the first file that is not. Folders promoted before hashes were
    recorded (no files.json) pass as they are."""
    recorded = _read(folder / FILES)
    for name, digest in sorted((recorded or {}).items()):
        path = folder / name
        if not path.is_file():
            raise DamagedModel(f"missing model file {path}: the model was promoted with it; "
                               f"restore it or run `foley run --force`")
        if file_hash(path) != digest:
            raise DamagedModel(f"damaged model file {path}: its content is not what was promoted; "
                               f"restore it or run `foley run --force`")
    return folder


def _record_files(folder: Path) -> None:
    hashes = {p.relative_to(folder).as_posix(): file_hash(p)
              for p in sorted(folder.rglob("*")) if p.is_file() and p.name != FILES}
    write_text_atomic(folder / FILES, json.dumps(hashes, indent=2, sort_keys=True))


# ---------------------------------------------------------------- promoting
def promote_base(pipeline, profile, metrics: dict, *, export_problems: int, class_models: dict | None = None) -> Path:
    """Save the evaluated pipeline as ``pipelines/<model_version>/``, record its metrics as the
    accepted ones, point ``base`` at it, and ``latest`` too unless a fine-tune is served.

    The gate is re-applied here, under the lock, against the accepted metrics on disk: however
    promotion is launched (a later run, a click in the UI), a model that fails it, or whose
    metrics are NaN, raises ``PromotionRefused`` and nothing moves. The version folder is
    written aside and renamed in whole, so a kill leaves no folder or a complete one (a complete
    one is reused: the version is a hash of the weights)."""
    root = pipelines_dir(profile)
    folder = root / metrics["model_version"]
    with exclusive_lock(root / LOCK):
        problems = gate_problems(metrics, accepted_metrics(profile), profile.evaluation.regression_margin, export_problems)
        if problems:
            raise PromotionRefused(f"model {metrics.get('model_version')} not promoted: {'; '.join(problems)}")
        if not _is_complete(folder):
            clap_folder = layout(profile).clap if pipeline.clap_source == "trained" else None
            with staged_dir(folder) as staging:  # replaces a half folder an older version left
                for name, class_pipeline in (class_models or {}).items():
                    class_pipeline.save_pretrained(staging / CLASS_MODELS / name, clap_folder=clap_folder)
                extra = {"model_version": metrics["model_version"], "profile": profile.name}
                if "precision" in metrics:  # what each network trained and sampled in (evaluate_generation)
                    extra["precision"] = metrics["precision"]
                if class_models:  # which class generates with which saved model
                    extra["class_models"] = {c: profile.model_of(c) for c in profile.class_names
                                             if profile.model_of(c) in class_models}
                pipeline.save_pretrained(staging, clap_folder=clap_folder, extra=extra)
                write_text_atomic(staging / METRICS, json.dumps(metrics, indent=2))
                _record_files(staging)
        keeps_finetune = (served(profile) or {}).get("kind") == "finetuned"
        write_text_atomic(root / ACCEPTED, json.dumps(metrics, indent=2))
        replace_symlink(root / BASE, folder.name)
        if not keeps_finetune:
            _serve(profile, folder, {"model_version": metrics["model_version"], "kind": "base",
                                     "base_model_version": metrics["model_version"], "accepted": metrics})
    return folder


def promote_finetuned(profile, base_dir: Path, base_config: dict, candidate_dir: Path, record: dict) -> Path:
    """``pipelines/<version>/``: the fine-tuned model for the held classes, the base for the
    others (saved beside it, routed per class); ``latest`` -> it, with the transfer gate's
    result recorded as what it was accepted on."""
    root = pipelines_dir(profile)
    folder = root / record["model_version"]
    base_routes = base_config.get("class_models") or {c: profile.model_of(c) for c in profile.class_names
                                                       if profile.model_of(c) is not None}
    routes = {label: base_routes.get(label) or BASE_MODEL for label in profile.class_names
              if label not in record["classes"]}
    with exclusive_lock(root / LOCK):
        with staged_dir(folder) as staging:
            shutil.copytree(candidate_dir, staging, dirs_exist_ok=True)
            for model in sorted(set(routes.values())):
                source = base_dir if model == BASE_MODEL else base_dir / CLASS_MODELS / model
                shutil.copytree(source, staging / CLASS_MODELS / model,
                                ignore=shutil.ignore_patterns(CLASS_MODELS, FILES))
            config = json.loads((staging / PIPELINE_CONFIG).read_text())
            routes.update(config.get("class_models") or {})  # the held classes, as the candidate routes them
            config.update(model_version=record["model_version"], profile=profile.name, class_models=routes,
                          transfer={k: record.get(k) for k in ("base_model_version", "source", "source_data_version",
                                                               "source_dvc_version", "train", "classes", "settings",
                                                               "fingerprint")})
            write_text_atomic(staging / PIPELINE_CONFIG, json.dumps(config, indent=2, sort_keys=True))
            write_text_atomic(staging / METRICS, json.dumps(record["gate"], indent=2))
            _record_files(staging)
        _serve(profile, folder, {"model_version": record["model_version"], "kind": "finetuned",
                                 "base_model_version": record["base_model_version"], "source": record.get("source"),
                                 "accepted": record["gate"]})
    return folder


def _serve(profile, folder: Path, record: dict) -> None:
    root = pipelines_dir(profile)
    write_text_atomic(root / SERVED, json.dumps(record, indent=2, sort_keys=True))
    replace_symlink(root / LATEST, folder.name)


def describe_served(profile) -> str:
    """One line for the terminal: what `foley generate` serves, and from which base."""
    record = served(profile)
    if record is None:
        return "no model served yet"
    if record["kind"] == "finetuned":
        return (f"{record['model_version']} (fine-tuned on {record.get('source') or 'own recordings'} "
                f"from base {record['base_model_version']})")
    return record["model_version"]

