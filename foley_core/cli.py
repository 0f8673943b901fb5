"""`foley`: the everyday entry point (data management, ingestion, the main job).

Errors a user can fix print one line and exit with code 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

import foley_core  # noqa: F401  (offline defaults)
from foley_core.config import ConfigError, load_profile

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
    from foley_core.config import SyntheticSource
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
    from foley_core.data.ingest import ingest
    from foley_core.data.sources import discover_all, discover_source, source_from_path

    prof = _load(profile)
    try:
        if source is None:
            found = discover_all(prof)
            out = out or prof.artifact_dir("dataset")
        else:
            found = discover_source(source_from_path(source), prof)
            out = out or prof.artifact_dir("ingest", source.resolve().name)
    except (FileNotFoundError, ValueError) as exc:
        raise UserError(str(exc)) from None
    total = len(found.files) + len(found.rejected)
    click.echo(f"found {total} audio files ({len(found.ignored)} non-audio files ignored); ingesting into {out}")
    result = ingest(found.files, found.rejected, out, prof, progress=lambda label, r: click.echo(
        f"  {label:<20} {len(r.clips):5d} clips  {len(r.quarantined):3d} quarantined", err=True))
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

    from foley_core.audio import write_text_atomic
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


@main.command("run")
@PROFILE_OPTION
def run(profile: str) -> None:
    """Run the whole pipeline (every Dagster asset) for a profile."""
    _load(profile)
    from orchestration.runner import run_pipeline

    click.echo(f"foley run --profile {profile}")
    try:
        run_pipeline(profile, echo=click.echo)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
