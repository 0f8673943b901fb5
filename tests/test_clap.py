"""CLAP stage: the trained encoder, its training loop, input errors, and the embedding cache."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch

from foley_core.clap import EmbeddingCache, evaluate_clap, load_clap, load_paraphrases, train_clap
from foley_core.core.config import DCASE_CLASS_IDS, load_profile
from foley_core.data.ingest import ingest, load_manifest
from foley_core.data.sources import discover_source, source_from_path
from foley_core.data.synth import DCASE_SOUND_TYPES, SOUND_TYPES, synthesize_clip, write_synthetic_corpus


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A smoke-size ingested corpus (1 s clips): 7 DCASE classes x 4 + Bell x 2."""
    root = tmp_path_factory.mktemp("clap")
    profile = load_profile("smoke", {"paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts")},
                                     "wandb": {"mode": "disabled"}})
    write_synthetic_corpus(root / "raw", list(DCASE_SOUND_TYPES), 4, duration_s=1.0, seed=0)
    write_synthetic_corpus(root / "raw", ["Bell"], 2, duration_s=1.0, seed=0)
    found = discover_source(source_from_path(root / "raw"), profile)
    ingest(found.files, found.rejected, profile.artifact_dir("dataset"), profile)
    return profile, load_manifest(profile.artifact_dir("dataset"))


@pytest.fixture(scope="module")
def trained(corpus):
    profile, manifest = corpus
    out = profile.artifact_dir("clap")
    metrics = train_clap(profile, manifest, out, paraphrases=load_paraphrases())
    return profile, manifest, metrics, load_clap(profile)


def test_training_saves_safetensors_config_and_metrics(trained):
    profile, manifest, metrics, encoder = trained
    out = profile.artifact_dir("clap")
    assert {p.name for p in out.iterdir()} >= {"model.safetensors", "config.json", "metrics.json", "checkpoints"}
    assert metrics["steps"] == profile.clap.steps == 5
    assert metrics["version"] == encoder.version and len(encoder.version) == 16
    assert metrics["val_clips"] == int((manifest["split"] == "val").sum())
    for key in ("recall_at_1", "recall_at_5", "zero_shot_accuracy", "paraphrase_accuracy"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["paraphrase_prompts"] == len(load_paraphrases())
    assert np.isfinite(metrics["final_loss"]) and metrics["final_loss"] > 0
    # Lightning checkpoints hold only tensors and plain values
    ckpt = torch.load(out / "checkpoints/last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 5 and any(k.startswith("model.audio_branch.") for k in ckpt["state_dict"])


def test_encoder_shapes_norms_and_determinism(trained):
    profile, manifest, _, encoder = trained
    text = encoder.encode_text(["a dog bark", "rain", "someone using keyboard"])
    assert text.shape == (3, profile.clap.embed_dim) and text.dtype == torch.float32
    assert torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-5)
    clips = [sf.read(p, dtype="float32")[0] for p in manifest["abs_path"][:3]]
    audio = encoder.encode_audio(np.stack(clips), 16000)
    assert audio.shape == (3, profile.clap.embed_dim)
    assert torch.allclose(audio.norm(dim=1), torch.ones(3), atol=1e-5)
    # batching does not change results; a list of differing lengths works item by item
    assert torch.allclose(encoder.encode_audio(clips[:1], 16000), audio[:1], atol=1e-4)
    mixed = encoder.encode_audio([clips[0], clips[1][:8000]], 16000)
    assert torch.allclose(mixed[0], audio[0], atol=1e-4) and mixed.shape == (2, profile.clap.embed_dim)
    again = load_clap(profile)
    assert again.version == encoder.version
    assert torch.equal(again.encode_text(["a dog bark", "rain", "someone using keyboard"]), text)


@pytest.mark.parametrize(
    "texts, message",
    [(["a dog bark", ""], "text 1 is empty"), (["   "], "text 0 is empty")],
)
def test_bad_text_is_named(trained, texts, message):
    with pytest.raises(ValueError, match=message):
        trained[3].encode_text(texts)


def test_bad_audio_is_named(trained):
    encoder = trained[3]
    good = np.zeros(16000, dtype=np.float32) + 0.1
    nan = good.copy()
    nan[5] = np.nan
    with pytest.raises(ValueError, match="audio item 1 contains NaN"):
        encoder.encode_audio([good, nan], 16000)
    with pytest.raises(ValueError, match="audio item 2 has zero length"):
        encoder.encode_audio([good, good, np.zeros(0, dtype=np.float32)], 16000)
    with pytest.raises(ValueError, match="22050 Hz.*takes 16000 Hz"):
        encoder.encode_audio([good], 22050)
    with pytest.raises(ValueError, match="shape"):
        encoder.encode_audio(np.zeros((2, 3, 4)), 16000)


def test_training_resumes_from_last_checkpoint(trained, tmp_path):
    profile, manifest, _, _ = trained
    out = tmp_path / "resume"
    first = train_clap(profile, manifest, out)
    longer = profile.model_copy(update={"clap": profile.clap.model_copy(update={"steps": 7})})
    resumed = train_clap(longer, manifest, out)
    assert (first["steps"], resumed["steps"]) == (5, 7)
    assert resumed["version"] != first["version"]
    # checkpoints of other data are not resumed
    fewer = manifest.drop(index=manifest[manifest["split"] == "train"].index[:1])
    retrained = train_clap(longer, fewer, out)
    assert retrained["steps"] == 7 and retrained["version"] != resumed["version"]
    # same seed, same data, same steps: the same model
    assert train_clap(profile, manifest, tmp_path / "again")["version"] == first["version"]


def test_checkpoints_of_other_training_code_are_not_resumed(trained, monkeypatch):
    from foley_core.clap import train as clap_train

    profile, manifest, _, _ = trained
    rows = manifest[manifest["split"] == "train"]
    before = clap_train._run_fingerprint(profile, rows)
    monkeypatch.setattr(clap_train, "_training_code_version", lambda: "edited-towers")
    assert clap_train._run_fingerprint(profile, rows) != before


def test_cache_computes_only_new_clips(trained, tmp_path):
    profile, manifest, _, encoder = trained
    root = tmp_path / "cache" / "DogBark"
    dog = manifest[manifest["class"] == "DogBark"]
    cache = EmbeddingCache(root, encoder.version)
    assert cache.update_audio(encoder, dog) == {"computed": len(dog), "reused": 0}
    assert EmbeddingCache(root, encoder.version).update_audio(encoder, dog) == {"computed": 0, "reused": len(dog)}

    extra = synthesize_clip("DogBark", 99, sample_rate=16000, duration_s=1.0)
    path = tmp_path / "extra.wav"
    sf.write(path, extra.audio, 16000, subtype="PCM_16")
    added = pd.concat([dog, pd.DataFrame([{**dog.iloc[0].to_dict(), "content_hash": "f" * 64, "abs_path": str(path)}])])
    reopened = EmbeddingCache(root, encoder.version)
    assert reopened.update_audio(encoder, added) == {"computed": 1, "reused": len(dog)}
    stored = reopened.audio(added["content_hash"])
    assert stored.shape == (len(dog) + 1, encoder.embed_dim) and stored.dtype == np.float32
    # rows are the encoder's output, computed in the same batches as the cache did (batch size moves float noise)
    read = [sf.read(p, dtype="float32")[0] for p in added["abs_path"]]
    np.testing.assert_allclose(stored[:-1], encoder.encode_audio(read[:-1], 16000).numpy(), atol=1e-6)
    np.testing.assert_allclose(stored[-1:], encoder.encode_audio(read[-1:], 16000).numpy(), atol=1e-6)

    texts = list(dog["caption"]) + profile.class_config("DogBark").prompts
    assert reopened.update_text(encoder, texts)["computed"] == len(set(texts))
    assert reopened.update_text(encoder, texts)["computed"] == 0
    np.testing.assert_allclose(reopened.text(["a dog bark"]), encoder.encode_text(["a dog bark"]).numpy(), atol=1e-6)
    assert not list(root.glob("*.pkl")) and not list(root.glob("*.pickle"))

    changed = EmbeddingCache(root, "another-model-v")
    with pytest.raises(KeyError, match="not cached"):
        changed.audio(dog["content_hash"][:1])
    with pytest.raises(ValueError, match="cache holds model"):
        changed.update_audio(encoder, dog)


def test_cached_text_embedder_reads_each_cache_once_and_encodes_only_what_is_missing(trained, monkeypatch):
    from foley_core.clap.cache import cached_text_embedder
    from foley_core.core.layout import layout

    profile, _, _, encoder = trained
    for label in ("DogBark", "Footstep"):
        EmbeddingCache(layout(profile).embeddings(label), encoder.version).update_text(encoder, profile.class_config(label).prompts)
    embed = cached_text_embedder(profile, encoder)
    loads, encoded = [], []
    original_load, original_encode = EmbeddingCache._load, encoder.encode_text
    monkeypatch.setattr(EmbeddingCache, "_load", lambda self, kind: loads.append(kind) or original_load(self, kind))
    monkeypatch.setattr(encoder, "encode_text", lambda texts: encoded.append(list(texts)) or original_encode(texts))
    dog, step = profile.class_config("DogBark").prompts[0], profile.class_config("Footstep").prompts[0]
    texts = [dog, "a text no cache holds", step] * 200  # a fine-tune asks for thousands of mostly repeated texts
    rows = embed(texts)
    assert rows.shape == (600, encoder.embed_dim)
    np.testing.assert_allclose(rows[:3], original_encode([dog, "a text no cache holds", step]).numpy(), atol=1e-5)
    np.testing.assert_array_equal(rows[3:6], rows[:3])
    assert encoded == [["a text no cache holds"]]  # once, not 200 times
    assert len(loads) <= len(profile.class_names)  # at most one reload per cache, not one per miss


def test_paraphrases_are_held_out_and_cover_every_class():
    table = load_paraphrases()
    assert list(table.columns) == ["prompt", "class"] and len(table) >= 28
    counts = table["class"].value_counts()
    assert set(counts.index) == set(DCASE_CLASS_IDS) and counts.min() >= 4
    assert table["prompt"].is_unique and table["prompt"].str.strip().str.len().min() > 0
    # never a caption the synthesiser can produce (its first 150 clips of every type)
    captions = {synthesize_clip(t, i, sample_rate=8000, duration_s=0.1).caption.lower() for t in SOUND_TYPES for i in range(150)}
    assert not captions & set(table["prompt"].str.lower())


def test_evaluate_needs_validation_clips(trained):
    profile, manifest, _, encoder = trained
    with pytest.raises(ValueError, match="at least one validation clip"):
        evaluate_clap(encoder, manifest.iloc[0:0], profile, None)


def test_importing_the_stage_never_imports_laion_clap_package():
    code = (
        "import sys; import foley_core.clap, foley_core.clap.laion; from foley_core.clap._laion import clap_module;"
        "clap_module(); assert 'laion_clap' not in sys.modules, 'laion_clap imported'; print('ok')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def test_training_logs_to_wandb_offline(corpus, tmp_path):
    profile, manifest = corpus
    offline = profile.model_copy(update={
        "wandb": profile.wandb.model_copy(update={"mode": "offline"}),
        "clap": profile.clap.model_copy(update={"steps": 2}),
    })
    metrics = train_clap(offline, manifest, tmp_path / "wandb-run")
    assert metrics["steps"] == 2
    runs = list((tmp_path / "wandb-run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("*.wandb"))
