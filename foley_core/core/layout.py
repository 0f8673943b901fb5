"""Where every artifact of a profile lives: the one place that knows the folder layout.

    artifacts/<profile>/
      dataset/<Class>/            normalised clips + manifest (per class)
      clap/                       the CLAP model (trained here) and its metrics
      clap_embeddings/<Class>/    cached CLAP audio + text embeddings (per class)
      ldm/                        VAE + UNet + vocoder (trained or imported)
      ldm-models/<model>/         a named LDM some classes generate with (``ldm.models``)
      text-encoders/<source>/     an AudioLDM folder's ``.bin``-only text encoder, converted once to safetensors
      converted/<hash>/           an original-format AudioLDM checkpoint as a diffusers folder (``foley generate --model``)
      finetune/{adapter,identity}[-<model>]  the fine-tuned adapter and the identity ablation
      generation/<variant>/<Class>/ candidates, selected clips, selection.json
      dcase/<Class>/NNN.wav       the selected clips in the DCASE layout
      evaluation/metrics.json     FAD/KAD, class consistency, ablation
      transfer/<source>/          `foley finetune SOURCE`: CLAP, fine-tuned model, gate clips, transfer.json
      pipelines/                  promoted model versions, ``latest``, accepted metrics
      records/<asset>[/<part>].json  what each pipeline stage produced (path, version, inputs)
      .foley-run.lock             held by the one `foley run` using this folder
    outputs/<run-id>/             a run's report, metrics and clips; ``outputs/latest``

Every folder is named here and nowhere else, so the Dagster layer and the CLI cannot disagree.
So is every file inside them that more than one module reads (``latest``, ``pipeline.json``,
``selection.json``, ``transfer.json``, ...: the constants below). A file that only its own
module writes and reads (a model's weights, a cache's index) is named by that module.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from foley_core.core.config import Profile
from foley_core.core.hashing import sha256_hex

VARIANTS = ("adapter", "identity")  # the fine-tuned adapter, and the identity-adapter ablation

# The files inside those folders that more than one module reads: named here, once.
LATEST = "latest"  # pipelines/latest: the served model; outputs/latest: the newest run
BASE = "base"  # pipelines/base: the accepted base model
ACCEPTED = "accepted_metrics.json"  # pipelines/: the accepted base's evaluation
SERVED = "served.json"  # pipelines/: what latest serves and what it was accepted on
PIPELINES_LOCK = ".lock"  # pipelines/: held while a model is promoted
PIPELINE_CONFIG = "pipeline.json"  # a saved pipeline: its components and settings
METRICS = "metrics.json"  # a promoted folder: the metrics it was accepted on
FILES = "files.json"  # a promoted folder: relative path -> content hash, written last
CLASS_MODELS = "models"  # a promoted folder: models/<name>/, the pipelines some classes generate with
SELECTION = "selection.json"  # generation/<variant>/<Class>/: what was selected, with its scores
TRANSFER_RECORD = "transfer.json"  # transfer/<source>/: the fine-tune's record and gate


@dataclass(frozen=True)
class Layout:
    profile: Profile

    @property
    def root(self) -> Path:
        return self.profile.artifact_dir()

    @property
    def dataset(self) -> Path:
        return self.root / "dataset"

    def ingest(self, name: str) -> Path:
        """`foley data ingest` / `foley finetune` of a folder outside the profile's sources."""
        return self.root / "ingest" / name

    @property
    def clap(self) -> Path:
        return self.root / "clap"

    def embeddings(self, label: str) -> Path:
        return self.root / "clap_embeddings" / label

    def embeddings_for_clap(self, label: str, clap_version: str) -> Path:
        """A class's clips embedded by another CLAP than the profile's (an adapted one selects with it)."""
        return self.root / "clap_embeddings_by_clap" / clap_version[:16] / label

    @property
    def ldm(self) -> Path:
        return self.root / "ldm"

    @property
    def converted(self) -> Path:
        """Original-format checkpoints converted to diffusers folders, one per content hash
        (``foley_core.ldm.original_checkpoint``)."""
        return self.root / "converted"

    def ldm_for(self, model: str | None) -> Path:
        """The main LDM (None) or a named one (``ldm.models``, a model per class)."""
        return self.ldm if model is None else self.root / "ldm-models" / model

    def converted_text_encoder(self, source: str | Path) -> Path:
        """Where the ``.bin``-only ``text_encoder/`` of the AudioLDM folder ``source`` is converted to
        (one folder per source folder: the main LDM's and each named one's)."""
        return self.root / "text-encoders" / sha256_hex(str(source))[:16]

    def finetune(self, variant: str | None = None, model: str | None = None) -> Path:
        """The adapters: ``finetune/<variant>`` for the main LDM, ``finetune/<variant>-<model>`` for a named one."""
        if variant is None:
            return self.root / "finetune"
        return self.root / "finetune" / (variant if model is None else f"{variant}-{model}")

    def finetune_source(self, name: str) -> Path:
        """The adapter fine-tuned by `foley finetune SOURCE`."""
        return self.root / f"finetune-{name}" / "adapter"

    def transfer(self, name: str) -> Path:
        """`foley finetune SOURCE`: the fine-tune on a folder of recordings, its gate clips and record."""
        return self.root / "transfer" / name

    @property
    def prompts(self) -> Path:
        """The prompt search's record (class_prompts asset): each class's candidates, scores, winner."""
        return self.root / "prompts" / "prompts.json"

    def generation(self, variant: str, label: str | None = None) -> Path:
        root = self.root / "generation" / variant
        return root / label if label else root

    @property
    def dcase(self) -> Path:
        return self.root / "dcase"

    @property
    def metrics(self) -> Path:
        return self.root / "evaluation" / "metrics.json"

    @property
    def pipelines(self) -> Path:
        return self.root / "pipelines"

    def record(self, asset: str, partition: str | None = None) -> Path:
        folder = self.root / "records" / asset
        return folder / f"{partition}.json" if partition else folder.with_suffix(".json")

    @property
    def run_lock(self) -> Path:
        return self.root / ".foley-run.lock"

    def step_lock(self, step: str) -> Path:
        """The lock of one asset (``name`` or ``name[Class]``) while a worker writes it inside a `foley run`."""
        return self.root / ".foley-steps" / f"{step}.lock"

    @property
    def outputs(self) -> Path:
        return self.profile.resolve(self.profile.paths.outputs_dir)


def layout(profile: Profile) -> Layout:
    return Layout(profile)
