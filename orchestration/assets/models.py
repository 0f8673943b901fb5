"""Model stage assets: clap_model -> clap_embeddings (per class) -> pretrained_ldm -> finetuned_adapter.

Each body calls foley_core and attaches metadata; each data version is a content hash of
what it wrote, so an unchanged input re-materialises to the same version.
"""

import base64
import hashlib
import json
from pathlib import Path

import numpy as np
from dagster import (
    AssetExecutionContext,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    StaticPartitionsDefinition,
    asset,
)

from foley_core.config import Profile
from foley_core.data.ingest import load_manifest
from foley_core.data.sources import partition_keys
from foley_core.data.versioning import folder_hash
from orchestration.assets.data import dataset_dir
from orchestration.resources import FoleyProfile
from orchestration.versions import code_version


def folder_version(folder: Path, pattern: str = "*.safetensors") -> str:
    """Data version of a model or clip folder: the content hash of its matching files."""
    return folder_hash(folder, pattern)[:16]


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float, str)) and not isinstance(v, bool)}


def embeddings_dir(profile: Profile, label: str) -> Path:
    return profile.artifact_dir("clap_embeddings", label)


def load_conditioning(profile: Profile, clap_version: str, manifest) -> dict[str, np.ndarray]:
    """content_hash -> CLAP audio embedding, read from the per-class caches (nothing recomputed)."""
    from foley_core.clap import EmbeddingCache

    conditioning: dict[str, np.ndarray] = {}
    for label, rows in manifest.groupby("class"):
        cache = EmbeddingCache(embeddings_dir(profile, label), clap_version)
        hashes = list(rows["content_hash"])
        conditioning.update(zip(hashes, cache.audio(hashes)))
    return conditioning


def text_embedder(profile: Profile, encoder):
    """Text -> embedding through the class caches first (captions, prompts), the encoder otherwise."""
    from foley_core.clap import EmbeddingCache

    caches = [EmbeddingCache(embeddings_dir(profile, c), encoder.version) for c in profile.class_names]

    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for text in texts:
            for cache in caches:
                try:
                    out.append(cache.text([text])[0])
                    break
                except KeyError:
                    continue
            else:
                out.append(encoder.encode_text([text]).numpy()[0])
        return np.stack(out)

    return embed


def build_model_assets(profile: Profile, foley_dataset) -> list:
    dataset_partitions = StaticPartitionsDefinition(partition_keys(profile))

    @asset(
        group_name="models",
        deps=[foley_dataset],
        pool="compute",
        code_version=code_version(profile, ["foley_core.clap.train", "foley_core.clap.towers", "foley_core.clap.encoder"],
                                  ["clap", "audio", "seed", "trainer"]),
        description="CLAP text + audio encoders in one space: trained contrastively here, or a LAION checkpoint.",
    )
    def clap_model(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.clap import evaluate_clap, load_clap, load_paraphrases, train_clap

        prof = foley.load()
        manifest = load_manifest(dataset_dir(prof))
        if prof.clap.source == "trained":
            metrics = train_clap(prof, manifest, prof.artifact_dir("clap"), paraphrases=load_paraphrases())
        else:
            encoder = load_clap(prof)
            metrics = {**evaluate_clap(encoder, manifest[manifest["split"] == "val"], prof, load_paraphrases()),
                       "version": encoder.version}
        context.log.info(f"CLAP {metrics['version']}: zero-shot {metrics.get('zero_shot_accuracy')}, "
                         f"paraphrase {metrics.get('paraphrase_accuracy')}")
        return MaterializeResult(data_version=DataVersion(metrics["version"]), metadata=_scalars(metrics))

    @asset(
        group_name="models",
        deps=[clap_model, foley_dataset],
        partitions_def=dataset_partitions,
        code_version=code_version(profile, ["foley_core.clap.cache"], ["classes"]),
        description="Cached CLAP audio embeddings of every clip and text embeddings of captions and prompts, "
        "keyed by (CLAP version, clip content hash).",
    )
    def clap_embeddings(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.clap import EmbeddingCache, load_clap

        prof = foley.load()
        label = context.partition_key
        encoder = load_clap(prof)
        manifest = load_manifest(dataset_dir(prof), [label])
        cache = EmbeddingCache(embeddings_dir(prof, label), encoder.version)
        audio = cache.update_audio(encoder, manifest)
        prompts = list(prof.class_config(label).prompts) if label in prof.class_names else []
        text = cache.update_text(encoder, list(manifest["caption"]) + prompts)
        version = hashlib.sha256(json.dumps([encoder.version, sorted(manifest["content_hash"]),
                                             sorted(set(manifest["caption"]) | set(prompts))]).encode()).hexdigest()[:16]
        return MaterializeResult(
            data_version=DataVersion(version),
            metadata={"clap_version": encoder.version, "audio_computed": audio["computed"], "audio_reused": audio["reused"],
                      "text_computed": text["computed"], "text_reused": text["reused"], "clips": len(manifest)},
        )

    @asset(
        group_name="models",
        deps=[clap_embeddings, clap_model],
        pool="compute",
        code_version=code_version(profile, ["foley_core.ldm.training", "foley_core.ldm.modules", "foley_core.ldm.models",
                                            "foley_core.ldm.mel", "foley_core.ldm.components"],
                                  ["ldm", "audio", "seed", "trainer"]),
        description="VAE + UNet + vocoder pre-trained on every clip, the UNet conditioned on its CLAP audio embedding.",
    )
    def pretrained_ldm(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.clap import load_clap
        from foley_core.ldm.training import train_ldm

        prof = foley.load()
        manifest = load_manifest(dataset_dir(prof))
        clap_version = load_clap(prof).version
        out = prof.artifact_dir("ldm")
        metrics = train_ldm(prof, manifest, load_conditioning(prof, clap_version, manifest), out)
        metadata = {"clap_version": clap_version, "path": MetadataValue.path(str(out))}
        for name in ("vae", "vocoder", "unet"):
            part = metrics.get(name, {})
            metadata.update({f"{name}/{k}": v for k, v in _scalars(part).items() if k != "fingerprint"})
        metadata["parameters"] = MetadataValue.json(metrics.get("parameters", {}))
        metadata["reconstruction"] = MetadataValue.json(
            {k: v for k, v in metrics.get("reconstruction", {}).items() if not isinstance(v, (bytes, dict))})
        spectrogram = out / "reconstruction.png"
        if spectrogram.is_file():
            metadata["reconstruction_spectrograms"] = MetadataValue.md(
                f"![reconstruction](data:image/png;base64,{base64.b64encode(spectrogram.read_bytes()).decode()})")
        return MaterializeResult(data_version=DataVersion(folder_version(out)), metadata=metadata)

    @asset(
        group_name="models",
        deps=[pretrained_ldm, clap_embeddings],
        pool="compute",
        code_version=code_version(profile, ["foley_core.generation.finetune", "foley_core.generation.adapter"],
                                  ["finetune", "classes", "seed"]),
        description="The paper's d x d embedding adapter fine-tuned on the target classes, and the identity ablation "
        "(same seed and steps, adapter frozen).",
    )
    def finetuned_adapter(context: AssetExecutionContext, foley: FoleyProfile) -> MaterializeResult:
        from foley_core.clap import load_clap
        from foley_core.generation.finetune import finetune_adapter

        prof = foley.load()
        encoder = load_clap(prof)
        manifest = load_manifest(dataset_dir(prof), prof.class_names)
        ldm_dir = prof.artifact_dir("ldm")
        base = folder_version(ldm_dir)
        embed = text_embedder(prof, encoder)
        runs = {
            variant: finetune_adapter(prof, manifest, embed, ldm_dir, prof.artifact_dir("finetune", variant),
                                      train_adapter=variant == "adapter", base_version=base, clap_version=encoder.version)
            for variant in ("adapter", "identity")
        }
        adapter = runs["adapter"]
        return MaterializeResult(
            data_version=DataVersion(folder_version(prof.artifact_dir("finetune"))),
            metadata={
                "base_model_version": base,
                "clap_version": encoder.version,
                "adapter_parameters": adapter["adapter_parameters"],
                "val_loss_adapter": adapter["val_loss"],
                "val_loss_identity": adapter["val_loss_identity"],
                "loss_first": adapter.get("loss_first"),
                "loss_final": adapter.get("loss_final"),
                "steps": adapter.get("steps"),
                "prompt_cosine_raw_vs_adapted": MetadataValue.json(adapter["prompt_cosine_raw_vs_adapted"]),
            },
        )

    return [clap_model, clap_embeddings, pretrained_ldm, finetuned_adapter]
