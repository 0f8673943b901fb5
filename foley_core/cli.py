"""`foley`: the everyday entry point (data management, ingestion, the main job).

Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

import foley_core  # noqa: F401  (offline defaults)
from foley_core.core.config import ConfigError, load_profile
from foley_core.core.layout import layout

PROFILE_OPTION = click.option("--profile", "-p", default="cpu", show_default=True, help="configs/<name>.yaml or a path")


class UserError(click.ClickException):
    exit_code = 2

    def show(self, file=None) -> None:
        click.echo(f"error: {self.message}", err=True)


def _load(profile: str):
    try:
        return load_profile(profile)
    except ConfigError as exc:
        raise UserError(str(exc)) from None


@click.group()
@click.version_option(foley_core.__version__)
def main() -> None:
    """Text-to-Foley sound generation with a latent diffusion model (DCASE 2023 Task 7)."""


@main.group()
def data() -> None:
    """Raw data: synthesise, ingest, and DVC push/pull/status."""


@data.command("synth")
@PROFILE_OPTION
def data_synth(profile: str) -> None:
    """Write the profile's procedural (synthetic) sources, if absent."""
    from foley_core.core.config import SyntheticSource
    from foley_core.data.sources import materialise_synthetic

    prof = _load(profile)
    for source in prof.data.sources:
        if isinstance(source, SyntheticSource):
            click.echo(f"synthetic corpus: {materialise_synthetic(source, prof)}")


@data.command("ingest")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@PROFILE_OPTION
@click.option("--out", type=click.Path(path_type=Path), help="output folder (default: <artifacts>/ingest/<source name>)")
def data_ingest(source: Path | None, profile: str, out: Path | None) -> None:
    """Normalise SOURCE (a <Class>/* folder or a captioned CSV; default: the profile's sources).

    Every audio file is ingested or quarantined with a reason; prints a per-class summary.
    """
    from foley_core.data.ingest import UnsafeOutputError, check_output_folder, ingest
    from foley_core.data.sources import discover_all, discover_source, source_from_path

    prof = _load(profile)
    try:
        if source is None:
            sources = list(prof.data.sources)
            out = out or layout(prof).dataset
        else:
            sources = [source_from_path(source)]
            out = out or layout(prof).ingest(source.resolve().name)
        check_output_folder(out, sources, prof)  # before scanning: --out SRC would replace the recordings
        found = discover_all(prof) if source is None else discover_source(sources[0], prof)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    total = len(found.files) + len(found.rejected)
    click.echo(f"found {total} audio files ({len(found.ignored)} non-audio files ignored); ingesting into {out}")
    try:  # refused before anything is decoded if out/<Class>/ holds files ingest did not write
        result = ingest(found.files, found.rejected, out, prof, sources=sources, progress=lambda label, r: click.echo(
            f"  {label:<20} {len(r.clips):5d} clips  {len(r.quarantined):3d} quarantined", err=True))
    except UnsafeOutputError as exc:
        raise UserError(str(exc)) from None
    click.echo(result.summary().to_string())
    ingested = len({c.source_path for c in result.clips})
    click.echo(
        f"total: {total} found = {ingested} ingested + {len(result.quarantined)} quarantined; "
        f"{len(result.clips)} clips written"
    )
    if result.quarantined:
        click.echo(f"quarantine report: {out}/<Class>/quarantine.csv and {out}/quarantine_unassigned.csv")
    if ingested + len(result.quarantined) != total:
        raise UserError(f"accounting mismatch: {total} found but {ingested + len(result.quarantined)} accounted for")


def _dvc(*args: str) -> None:
    from foley_core.data.versioning import DvcError, run_dvc

    try:
        click.echo(run_dvc(*args), nl=False)
    except DvcError as exc:
        raise UserError(str(exc)) from None


@data.command("push")
def data_push() -> None:
    """`dvc add data` then `dvc push` to the configured remote."""
    _dvc("add", "data")
    _dvc("push")


@data.command("pull")
def data_pull() -> None:
    """`dvc pull`: restore data/ from the remote."""
    _dvc("pull")


@data.command("status")
def data_status() -> None:
    """`dvc status` (workspace vs data.dvc) and `dvc status -c` (cache vs remote)."""
    _dvc("status")
    _dvc("status", "--cloud")


@main.command("finetune")
@click.argument("source", required=False, type=click.Path(path_type=Path))
@PROFILE_OPTION
@click.option("--train", "train_what", type=click.Choice(["adapter", "unet", "all"]),
              help="what learns the recordings: the adapter, + the UNet, + the vocoder (default: transfer.train)")
def finetune(source: Path | None, profile: str, train_what: str | None) -> None:
    """Fine-tune the profile's accepted model on your own recordings in SOURCE (<Class>/<file>,
    any of the profile's classes, any audio format; default: the profile's transfer.source).

    The CLAP that scores candidates learns the recordings too. The result is promoted (and
    `foley generate` / `export-dcase` use it) only if its clips are closer to held-out
    recordings (split by recording) than the base model's, by log-mel FAD and KAD; otherwise
    the base stays in use and the command exits 3. Classes SOURCE lacks keep the base model."""
    import json

    import pandas as pd

    from foley_core.transfer import RESULT, GateRefused, finetune_on_recordings, summary_rows

    prof = _load(profile)
    source = source or (prof.resolve(Path(prof.transfer.source)) if prof.transfer.source else None)
    if source is None:
        raise UserError(f"name a folder of recordings, or set transfer.source in profile {prof.name!r}")
    refused = None
    try:
        record = finetune_on_recordings(prof, source, train_what)
    except GateRefused as exc:
        refused = exc
        record = json.loads((layout(prof).transfer(source.resolve().name) / RESULT).read_text())
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    for item in record.get("quarantined", []):
        click.echo(f"quarantined {item['path']}: {item['reason']}")
    clap = record["clap"]
    if "after" in clap:
        click.echo(f"CLAP zero-shot on held-out recordings: {clap['before']['recordings']['accuracy']:.2f} -> "
                   f"{clap['after']['recordings']['accuracy']:.2f}; on the profile's own validation clips: "
                   f"{clap['before']['procedural']['accuracy']:.2f} -> {clap['after']['procedural']['accuracy']:.2f} "
                   f"({'kept' if clap['kept'] else 'not kept: ' + clap['reason']})")
    click.echo(pd.DataFrame(summary_rows(record)).to_string(index=False))
    gate = record["gate"]
    click.echo(f"mean FAD {gate['base']['mean']['fad']:.1f} -> {gate['finetuned']['mean']['fad']:.1f}, "
               f"mean KAD {gate['base']['mean']['kad']:.4f} -> {gate['finetuned']['mean']['kad']:.4f} "
               f"(held-out recordings: {gate['reference_clips']})")
    if refused is not None:
        click.echo(str(refused), err=True)
        raise SystemExit(3)
    click.echo(f"promoted {record['model_version']} (from {record['base_model_version']}): {record['promoted_to']}")


@main.command("evaluate")
@click.argument("generated_dir", type=click.Path(path_type=Path, exists=True, file_okay=False))
@click.argument("reference_dir")
@click.option("--embedder", type=click.Choice(["logmel", "vggish", "clap"]), default="logmel", show_default=True)
@click.option("--vggish-weights", type=click.Path(path_type=Path), help="torchvggish state dict (or $FOLEY_VGGISH_WEIGHTS)")
@PROFILE_OPTION
@click.option("--out", type=click.Path(path_type=Path), help="also write the JSON here")
def evaluate(generated_dir: Path, reference_dir: str, embedder: str, vggish_weights: Path | None, profile: str,
             out: Path | None) -> None:
    """FAD and KAD per class of GENERATED_DIR against REFERENCE_DIR (<Class>/*.wav), JSON out.

    REFERENCE_DIR may be `official` (VGGish only): the DCASE 2023 evaluation-set statistics.
    """
    import json

    from foley_core.core.audio import write_text_atomic
    from foley_core.metrics import evaluate_dirs, make_embedder

    encoder = None
    if embedder == "clap":
        from foley_core.clap import load_clap

        encoder = load_clap(_load(profile))
    try:
        chosen = make_embedder(embedder, vggish_weights=vggish_weights, clap_encoder=encoder,
                               clap_sample_rate=getattr(encoder, "sample_rate", 16000))
        reference = reference_dir if reference_dir == "official" else Path(reference_dir)
        result = evaluate_dirs(generated_dir, reference, chosen)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    text = json.dumps(result, indent=2)
    if out:
        write_text_atomic(out, text + "\n")
    click.echo(text)


@main.command("validate-dcase")
@click.argument("directory", type=click.Path(path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(min=1), default=100, show_default=True)
def validate_dcase_command(directory: Path, clips_per_class: int) -> None:
    """Check a DCASE 2023 Task 7 Track A submission folder; names every offending file."""
    from foley_core.export import format_problems, validate_dcase

    problems = validate_dcase(directory, clips_per_class=clips_per_class)
    if problems:
        click.echo(format_problems(problems))
        raise UserError(f"{len(problems)} problem(s) in {directory}")
    click.echo(f"{directory}: valid ({clips_per_class} clips per class, 22050 Hz, mono, 16-bit, 4 s)")


def _pipeline(profile, model: Path | None):
    """The pipeline in ``model`` (a saved pipeline, a plain diffusers AudioLDM folder, or an original-format
    AudioLDM checkpoint + YAML, converted once; default: the profile's latest accepted model), on the
    profile's ``generation.device`` and ``precision``."""
    from foley_core.generation.pipeline import FoleyPipeline, place
    from foley_core.registry import latest_pipeline_dir, verify_model

    try:
        folder = (model or latest_pipeline_dir(profile)).resolve()
        model_profile = profile
        if model is not None:  # e.g. the DCASE winners' .ckpt: a diffusers folder in the artifacts, scored by its own CLAP
            from foley_core.ldm.original_checkpoint import prepare_model

            folder, model_profile = prepare_model(folder, profile)
        verify_model(folder)  # the content hashes recorded when it was promoted, where it was
        _check_weight_files(folder)
        return place(FoleyPipeline.from_pretrained(folder, model_profile), profile.generation), folder
    except (OSError, ValueError) as exc:  # OSError: transformers' "can't load" for a broken model folder
        raise UserError(str(exc)) from None


def _check_weight_files(folder: Path) -> None:
    """Every safetensors file of a model folder opens (header and length agree): a truncated or damaged
    copy is a one-line error naming the file, not a traceback from deep inside the loader."""
    from safetensors import safe_open

    for path in sorted(folder.rglob("*.safetensors")) if folder.is_dir() else []:
        try:
            with safe_open(str(path), framework="pt") as handle:
                handle.keys()
        except Exception as exc:  # safetensors raises its own SafetensorError (no OSError/ValueError base)
            raise UserError(f"damaged weights file {path}: {exc}; copy the model folder again") from None


def _check_writable(path: Path) -> None:
    import os

    parent = path.resolve().parent
    if not parent.is_dir():
        raise UserError(f"cannot write {path}: folder {parent} does not exist")
    if not os.access(parent, os.W_OK):
        raise UserError(f"cannot write {path}: folder {parent} is not writable")


@main.command("generate")
@click.argument("prompt", required=False, default="")
@click.option("--class", "class_name", help="use this class's configured prompt, candidates and guidance")
@click.option("--n-candidates", "-n", type=int, help="candidates generated in one batch; the best by CLAP is kept")
@click.option("--guidance", type=float, help="classifier-free guidance scale")
@click.option("--seconds", type=float, help="clip length (default: the model's, 4 s)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--steps", type=int, help="sampler steps (default: the model's)")
@click.option("-o", "--output", type=click.Path(path_type=Path), default=Path("out.wav"), show_default=True)
@click.option("--model", type=click.Path(path_type=Path),
              help="a pipeline folder, a diffusers AudioLDM folder such as cvssp/audioldm-s-full-v2, or an "
                   "original-format AudioLDM checkpoint with its YAML beside it (converted once) "
                   "(default: the profile's latest accepted model)")
@click.option("--device", help="auto | cpu | cuda | cuda:N | mps (default: the profile's generation.device)")
@click.option("--precision", type=click.Choice(["fp32", "bf16", "fp16"]),
              help="the UNet's dtype while sampling (default: the profile's generation.precision)")
@PROFILE_OPTION
def generate(prompt: str, class_name: str | None, n_candidates: int | None, guidance: float | None, seconds: float | None,
             seed: int, steps: int | None, output: Path, model: Path | None, device: str | None, precision: str | None,
             profile: str) -> None:  # noqa: PLR0913
    """Generate a sound for PROMPT and write it as a 22,050 Hz 16-bit wav.

    With --model pointing at a plain AudioLDM folder the folder's own text encoder conditions and
    its scheduler samples, so one candidate is the clip diffusers' AudioLDMPipeline makes for the
    same prompt, seed, steps, guidance and length (before the 22,050 Hz export); nothing else is
    needed. Several candidates are scored with the profile's CLAP."""
    import math

    import numpy as np
    from pydantic import ValidationError

    from foley_core.core.config import GenerationConfig
    from foley_core.export import write_dcase_clip
    from foley_core.generation.pipeline import ScoringUnavailable, resolve_device
    from foley_core.generation.prompts import chosen_prompt

    min_seconds = 0.1  # a clip must hold some sound (2,205 samples at 22,050 Hz), not an empty wav

    prof = _load(profile)
    overrides = {k: v for k, v in (("device", device), ("precision", precision)) if v is not None}
    if overrides:
        try:
            settings = GenerationConfig.model_validate({**prof.generation.model_dump(), **overrides})
        except ValidationError as exc:
            raise UserError(f"--{exc.errors()[0]['loc'][0]}: {exc.errors()[0]['msg']}") from None
        prof = prof.model_copy(update={"generation": settings})
    if class_name is not None:
        if class_name not in prof.class_names:
            raise UserError(f"unknown class {class_name!r}; choose one of {', '.join(prof.class_names)}")
        cfg = prof.class_config(class_name)
        prompt = prompt or chosen_prompt(prof, class_name)  # the prompt search's winner, if it ran
        n_candidates = cfg.candidates if n_candidates is None else n_candidates  # -n 0 is an error, not "default"
        guidance = cfg.guidance if guidance is None else guidance
    if not "".join(ch for ch in prompt if ch.isprintable()).strip():  # control characters alone say nothing either
        raise UserError("the prompt is empty (no printable text): give a text like \"a dog barking\" or --class DogBark")
    n_candidates = 1 if n_candidates is None else n_candidates
    if not 1 <= n_candidates <= 64:
        raise UserError(f"--n-candidates must be between 1 and 64, got {n_candidates}")
    # Every value is checked here, before the model loads: a bad one costs nothing and names itself.
    if guidance is not None and not (math.isfinite(guidance) and guidance >= 0):
        raise UserError(f"--guidance must be a finite number >= 0, got {guidance}")
    seconds = prof.audio.clip_seconds if seconds is None else seconds
    if not min_seconds <= seconds <= prof.audio.clip_seconds:  # also false for nan
        raise UserError(f"--seconds must be between {min_seconds} and {prof.audio.clip_seconds} for this model, "
                        f"got {seconds}")
    if steps is not None and not 1 <= steps <= 1000:
        raise UserError(f"--steps must be between 1 and 1000, got {steps}")
    if not 0 <= seed < 2**63:  # the documented range; any int would hash, but this keeps seeds portable
        raise UserError(f"--seed must be between 0 and 2**63 - 1, got {seed}")
    if output.is_dir():
        raise UserError(f"cannot write {output}: it is a folder; give a file name such as {output / 'out.wav'}")
    _check_writable(output)
    try:
        resolve_device(prof.generation.device)  # "cuda" on a machine without one: say so before loading
    except ValueError as exc:
        raise UserError(f"{exc}; or pass --device cpu") from None
    pipeline, folder = _pipeline(prof, model)
    if class_name is not None and model is None:  # a class routed to a named LDM (ldm.models) uses that model
        from foley_core.generation.submission import pipeline_for_class

        try:
            pipeline = pipeline_for_class(pipeline, folder, prof, class_name)
        except (OSError, ValueError) as exc:
            raise UserError(str(exc)) from None
    targets, against = None, ""
    if class_name is not None and model is not None and prof.class_config(class_name).clap_floor is None:
        from foley_core.ldm.original_checkpoint import stored_targets

        stored = stored_targets(folder, class_name)  # the winners' multi-target mode: a stored clip embedding
        if stored is not None:
            targets, against = stored[[seed % len(stored)]], f" against stored target {seed % len(stored)} of {len(stored)}"
    click.echo(f"generating {n_candidates} candidate(s) for {prompt!r} with model {folder.name} ...", err=True)
    try:
        result = pipeline([prompt], n_candidates=n_candidates, guidance_scale=2.5 if guidance is None else guidance,
                          seeds=[seed], steps=steps, seconds=seconds, targets=targets)
    except ScoringUnavailable as exc:
        raise UserError(f"{exc}; or use --n-candidates 1") from None
    try:  # write_dcase_clip writes atomically: on failure the old file (if any) is untouched
        write_dcase_clip(output, result.waveforms[0], result.sample_rate, out_rate=prof.audio.output_sample_rate,
                         seconds=seconds)
    except ValueError as exc:  # e.g. NaN samples from an extreme --guidance
        raise UserError(f"the model's audio for {prompt!r} is unusable ({exc}); nothing written to {output}") from None
    except OSError as exc:
        raise UserError(f"cannot write {output}: {exc}") from None
    if np.isnan(result.scores[0]).all():  # one candidate and no CLAP: nothing to choose between
        click.echo(f"wrote {output}: 1 candidate, not scored (no CLAP needed for one); model {folder.name}")
        return
    scores = ", ".join(f"{s:.3f}" for s in result.scores[0])
    click.echo(f"wrote {output}: candidate {int(result.best[0])} of {n_candidates}, CLAP score "
               f"{result.scores[0, result.best[0]]:.3f}{against} (all: {scores}); model {folder.name}")


@main.command("export-dcase")
@click.argument("out_dir", type=click.Path(path_type=Path))
@click.option("--clips-per-class", type=click.IntRange(1, 1000), default=100, show_default=True)
@click.option("--model", type=click.Path(path_type=Path), help="a pipeline folder (default: the latest accepted model)")
@PROFILE_OPTION
def export_dcase_command(out_dir: Path, clips_per_class: int, model: Path | None, profile: str) -> None:
    """Generate and write a DCASE 2023 Task 7 Track A submission: OUT_DIR/<Class>/NNN.wav."""
    from foley_core.export import check_export_target, export_dcase, format_problems, validate_dcase
    from foley_core.generation import submission

    prof = _load(profile)
    try:  # before the model loads and minutes of generation: never write into a user's folder
        check_export_target(out_dir)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    pipeline, folder = _pipeline(prof, model)
    clips = {}  # each class prints its own progress line (clips, ETA) and a summary
    click.echo(f"model {folder.name}: {clips_per_class} clips per class, {len(prof.class_names)} classes")
    from foley_core.generation.pipeline import ScoringUnavailable

    loaded: dict = {}
    try:
        for label in prof.class_names:  # a class routed to a named LDM (ldm.models) uses that model's pipeline
            chosen = submission.pipeline_for_class(pipeline, folder, prof, label, loaded)
            clips[label] = list(submission.generate_selected(chosen, prof, label, clips_per_class).selected)
    except ScoringUnavailable as exc:
        raise UserError(f"{exc} (the export scores every class's candidates)") from None
    except FileNotFoundError as exc:
        raise UserError(str(exc)) from None
    try:  # checks out_dir again (files may have appeared meanwhile), then swaps the whole export in
        export_dcase(clips, pipeline.sample_rate, out_dir, clips_per_class=clips_per_class)
    except (ValueError, OSError) as exc:
        raise UserError(str(exc)) from None
    problems = validate_dcase(out_dir, classes=prof.class_names, clips_per_class=clips_per_class)
    if problems:
        click.echo(format_problems(problems))
        raise UserError(f"the export in {out_dir} has {len(problems)} problem(s)")
    click.echo(f"wrote {clips_per_class} clips per class to {out_dir} (valid DCASE layout)")


if __name__ == "__main__":
    sys.exit(main())
