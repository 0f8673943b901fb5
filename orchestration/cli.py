"""The `foley` command with `foley run`: the library's CLI (foley_core.cli) plus the command
that runs the Dagster graph. It lives here so that foley_core never imports the Dagster layer."""

from __future__ import annotations

import sys

import click

from foley_core.cli import PROFILE_OPTION, UserError, _load, main


@main.command("run")
@PROFILE_OPTION
@click.option("--force", is_flag=True, help="recompute every stage and retrain every model from scratch (no cached model, no checkpoint resumed)")
def run(profile: str, force: bool) -> None:
    """Run the whole pipeline (every Dagster asset) for a profile; skips what is fresh."""
    _load(profile)
    from orchestration.runner import run_pipeline

    click.echo(f"foley run --profile {profile}: one line per stage (details, metadata and lineage: `make ui`)")
    try:
        run_pipeline(profile, echo=click.echo, force=force)
    except RuntimeError as exc:
        raise UserError(str(exc)) from None


if __name__ == "__main__":
    sys.exit(main())
