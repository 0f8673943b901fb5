"""Issue 23: what only the paper profile's real sizes and files break, each with the test that failed first.

1. The LAION checkpoint holds no tokenizer: it comes from the AudioLDM folder's ``tokenizer/``.
2. A ``text_encoder/`` with only ``pytorch_model.bin`` is converted once, like the VAE, UNet and vocoder.
3. Text encoding through AudioLDM's RoBERTa (512 tokens) is batched, each batch padded to its longest
   text, the batch a config value: the adapter fine-tune and ``foley finetune`` embed thousands of texts.
4. DDIM's eta is a config value (the winners sampled with 1.0) and reaches the scheduler's step.
5. Multi-target selection (MovingMotorVehicle) takes its targets from the training split only.
6. A missing VGGish file: the metrics and the report say the official FAD was skipped, and why.
7. ``docs/install.md``, cited by the Makefile and pyproject.toml, exists.

Everything runs on tiny random models built offline (tests/audioldm_fixtures.py, tests/laion_fixtures.py).
"""

from __future__ import annotations

import functools
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
from audioldm_fixtures import (
    CONDITION_DIM,
    make_tiny_audioldm_components,
    make_tiny_audioldm_folder,
    make_tiny_roberta_tokenizer,
)
from laion_fixtures import make_tiny_laion

from foley_core.core.config import PROJECT_ROOT, GenerationConfig, load_profile
from foley_core.core.layout import layout

ROBERTA_MAX_LENGTH = 512  # roberta-base's model_max_length, as AudioLDM's tokenizer/ has it
N_MELS = 32  # the smoke profile's


def _paths(root: Path) -> dict:
    return {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts"), "outputs_dir": str(root / "outputs")}


# ---------------------------------------------------------------- 1. the LAION tokenizer
@pytest.fixture(scope="module")
def laion_without_tokenizer(tmp_path_factory):
    """A LAION checkpoint, and an AudioLDM folder whose ``tokenizer/`` holds the same vocabulary and merges
    (as roberta-base's are in cvssp/audioldm-s-full-v2); the paper profile pointed at both, nothing else."""
    root = tmp_path_factory.mktemp("laion-tokenizer")
    checkpoint, tokenizer_dir, _ = make_tiny_laion(root / "models/laion_clap")
    audioldm = root / "models/audioldm-s-full-v2"
    shutil.copytree(tokenizer_dir, audioldm / "tokenizer")
    shutil.rmtree(tokenizer_dir)  # the checkpoint's folder holds no tokenizer, as the released one
    return root, checkpoint, audioldm


def test_the_laion_tokenizer_comes_from_the_audioldm_folder(laion_without_tokenizer):
    """The paper profile as shipped (``clap.tokenizer_path`` not there): the AudioLDM folder's tokenizer."""
    from foley_core.clap import load_clap

    root, checkpoint, audioldm = laion_without_tokenizer
    profile = load_profile("paper", {"paths": _paths(root), "clap": {"checkpoint": str(checkpoint)},
                                     "ldm": {"pretrained_path": str(audioldm)}})
    assert profile.clap.tokenizer_path is None or not profile.resolve(profile.clap.tokenizer_path).is_dir()
    encoder = load_clap(profile)
    from transformers import RobertaTokenizer

    reference = RobertaTokenizer.from_pretrained(str(audioldm / "tokenizer"), local_files_only=True)
    assert len(encoder.tokenizer) == len(reference)
    assert encoder.tokenizer("a dog bark").input_ids == reference("a dog bark").input_ids
    assert encoder.encode_text(["a dog bark"]).shape == (1, 512)


def test_no_tokenizer_anywhere_names_both_places(laion_without_tokenizer, tmp_path):
    from foley_core.clap import load_clap

    root, checkpoint, _ = laion_without_tokenizer
    empty = tmp_path / "audioldm-without-tokenizer"
    empty.mkdir()
    profile = load_profile("paper", {"paths": _paths(tmp_path), "clap": {"checkpoint": str(checkpoint),
                                                                           "tokenizer_path": str(tmp_path / "roberta")},
                                     "ldm": {"pretrained_path": str(empty)}})
    with pytest.raises(FileNotFoundError) as error:
        load_clap(profile)
    assert str(tmp_path / "roberta") in str(error.value) and str(empty / "tokenizer") in str(error.value)


# ---------------------------------------------------------------- 2. a .bin text encoder
def _bin_only_text_encoder(folder: Path) -> None:
    from safetensors.torch import load_file

    weights = folder / "text_encoder/model.safetensors"
    torch.save(load_file(str(weights)), folder / "text_encoder/pytorch_model.bin")
    weights.unlink()


def _smoke_with_audioldm(root: Path, folder: Path, **sections) -> "object":
    return load_profile("smoke", {"paths": _paths(root), "ldm": {"pretrained_path": str(folder), "mel_normalisation": "none"},
                                  "generation": {"device": "cpu", "precision": "fp32"}, **sections})


def test_a_bin_only_text_encoder_is_converted_once_into_the_artifacts(tmp_path, monkeypatch):
    import foley_core.ldm.importing as importing
    from foley_core.generation.conditioning import AudioLdmTextConditioner, load_conditioner

    folder = tmp_path / "audioldm"
    originals = make_tiny_audioldm_folder(folder, n_mels=N_MELS)
    _bin_only_text_encoder(folder)
    profile = _smoke_with_audioldm(tmp_path, folder)
    conditioner = load_conditioner(profile)  # from_pretrained(use_safetensors=True) failed on the .bin
    assert isinstance(conditioner, AudioLdmTextConditioner)
    loaded = conditioner.text_encoder.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in originals["text_encoder"].state_dict().items())
    assert not (folder / "text_encoder/model.safetensors").exists()  # the source is left as it was
    assert list(profile.artifact_dir().rglob("text_encoder/model.safetensors"))  # converted into the artifacts

    def no_second_conversion(*_args):
        raise AssertionError("converted twice")

    monkeypatch.setattr(importing, "convert_bin_to_safetensors", no_second_conversion)
    again = load_conditioner(profile)
    assert again.version == conditioner.version  # the version is the source's files, as found
    torch.testing.assert_close(again.encode(["a dog"]), conditioner.encode(["a dog"]), rtol=0, atol=0)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def test_a_bin_text_encoder_holding_objects_is_refused(tmp_path):
    from safetensors.torch import load_file

    from foley_core.generation.conditioning import load_conditioner
    from foley_core.ldm.importing import AudioLdmFolderError

    folder = tmp_path / "audioldm"
    make_tiny_audioldm_folder(folder, n_mels=N_MELS)
    state = load_file(str(folder / "text_encoder/model.safetensors"))
    marker = tmp_path / "pwned"
    torch.save({**state, "hook": _RunsACommand(marker)}, folder / "text_encoder/pytorch_model.bin")
    (folder / "text_encoder/model.safetensors").unlink()
    with pytest.raises(AudioLdmFolderError, match="objects other than tensors"):  # weights_only=True
        load_conditioner(_smoke_with_audioldm(tmp_path, folder))
    assert not marker.exists()


# ---------------------------------------------------------------- 3. bounded text batches
@pytest.fixture(scope="module")
def roberta_audioldm(tmp_path_factory):
    """A tiny AudioLDM folder whose tokenizer has RoBERTa's 512-token model_max_length."""
    from diffusers import AudioLDMPipeline

    root = tmp_path_factory.mktemp("audioldm-512")
    make_tiny_roberta_tokenizer(root / "tokenizer-src", model_max_length=ROBERTA_MAX_LENGTH)
    components = make_tiny_audioldm_components(root / "tokenizer-src", n_mels=N_MELS)
    assert components["tokenizer"].model_max_length == ROBERTA_MAX_LENGTH
    AudioLDMPipeline(**components).save_pretrained(str(root / "audioldm"), safe_serialization=True)
    return root / "audioldm"


def _texts(n: int) -> list[str]:
    """Thousands of distinct captions of varied length (the dev set's clips x their texts)."""
    words = ["a dog barking", "rain on a roof", "footsteps in a hall", "a car driving by", "typing"]
    return [f"{words[i % 5]} take {i}" + " and more" * (i % 4) for i in range(n)]


def _record_batches(conditioner, max_rows: int, max_tokens: int) -> list[tuple[int, int]]:
    """Wrap the text encoder's forward: record each batch's (rows, tokens), and refuse a batch past the
    bounds before it runs (one batch of thousands x 512 tokens would take gigabytes here)."""
    encoder, seen = conditioner.text_encoder, []
    forward = encoder.forward

    def recording(input_ids=None, *args, **kwargs):
        rows, tokens = input_ids.shape
        seen.append((rows, tokens))
        assert rows <= max_rows and tokens <= max_tokens, f"a batch of {rows} texts x {tokens} tokens"
        return forward(input_ids, *args, **kwargs)

    encoder.forward = recording
    return seen


def _unbatched(conditioner, texts: list[str]) -> torch.Tensor:
    """Today's embedding: one batch padded to the tokenizer's model_max_length."""
    tokens = conditioner.tokenizer(texts, padding="max_length", max_length=conditioner.tokenizer.model_max_length,
                                   truncation=True, return_tensors="pt")
    with torch.no_grad():
        out = conditioner.text_encoder(tokens.input_ids, attention_mask=tokens.attention_mask)
    return F.normalize(out.text_embeds, dim=-1).float()


def test_thousands_of_texts_go_through_the_512_token_encoder_in_bounded_batches(roberta_audioldm):
    from foley_core.generation.conditioning import AudioLdmTextConditioner

    conditioner = AudioLdmTextConditioner.from_pretrained(roberta_audioldm)
    texts = _texts(3000)
    longest = max(len(conditioner.tokenizer(t).input_ids) for t in texts)
    assert longest < 64 < ROBERTA_MAX_LENGTH
    subset = texts[:3] + texts[-2:]
    expected = _unbatched(conditioner, subset)  # before the recorder: this is the old, unbounded way
    seen = _record_batches(conditioner, 64, longest)  # 64: finetune.text_batch_size's default
    embeddings = conditioner.encode(texts)
    assert embeddings.shape == (3000, CONDITION_DIM) and sum(rows for rows, _ in seen) == 3000
    assert max(rows for rows, _ in seen) == conditioner.text_batch_size == 64
    torch.testing.assert_close(embeddings[[0, 1, 2, 2998, 2999]], expected, rtol=0, atol=1e-6)


def test_the_batch_is_a_config_value_for_the_adapter_fine_tune(roberta_audioldm, tmp_path):
    """``finetune.text_batch_size`` reaches the conditioner the adapter fine-tune embeds its texts with."""
    import foley_core.clap
    import foley_core.generation.conditioning as conditioning
    import foley_core.stages as stages

    profile = _smoke_with_audioldm(tmp_path, roberta_audioldm, finetune={"text_batch_size": 16})
    assert load_profile("smoke").finetune.text_batch_size == 64
    made, original = [], conditioning.load_conditioner

    def spy(*args, **kwargs):
        made.append(original(*args, **kwargs))
        return made[-1]

    class NoClap:  # the smoke profile's own CLAP is not trained here; the imported AudioLDM conditions
        version = "none"

    with pytest.MonkeyPatch.context() as patch:
        for module in (foley_core.clap, stages):  # wherever the stage looks the names up
            patch.setattr(module, "load_clap", lambda profile: NoClap(), raising=False)
        for module in (conditioning, stages):
            patch.setattr(module, "load_conditioner", spy, raising=False)
        embed, _, _ = stages.conditioning_text_embedder(profile)
    seen = _record_batches(made[0], 16, ROBERTA_MAX_LENGTH - 1)
    assert embed(_texts(100)).shape == (100, CONDITION_DIM)
    assert [rows for rows, _ in seen] == [16] * 6 + [4]


def test_foley_finetune_embeds_its_texts_in_bounded_batches(roberta_audioldm, tmp_path, monkeypatch):
    """``transfer.finetune_generator`` encodes every (clip, text) pair through the base's conditioner."""
    import foley_core.transfer.training as transfer  # where finetune_generator looks the names up
    from foley_core.generation.pipeline import FoleyPipeline
    from foley_core.transfer import finetune_generator

    class Stop(Exception):
        pass

    def stop(*_args, **_kwargs):  # right after the texts are embedded: nothing of the training is needed here
        raise Stop

    rows = pd.DataFrame({"class": "DogBark", "caption": [f"a dog barking, take {i}" for i in range(1500)]})
    monkeypatch.setattr(transfer, "_latents", lambda components, rows, profile: (
        *(torch.zeros(len(rows), 8, 4, 4),) * 2, np.tile(np.linspace(0.25, 1.0, 4), (len(rows), 1))))
    monkeypatch.setattr(transfer, "LatentConditions", stop)
    profile = _smoke_with_audioldm(tmp_path, roberta_audioldm, finetune={"text_batch_size": 32})
    base = FoleyPipeline.from_audioldm(roberta_audioldm)
    seen = _record_batches(base.conditioner, 32, ROBERTA_MAX_LENGTH - 1)
    with pytest.raises(Stop):
        finetune_generator(profile, base, rows, "adapter", tmp_path / "work")
    assert sum(r for r, _ in seen) == 1500 * 3 and max(r for r, _ in seen) == 32  # caption + 2 prompts per clip


# ---------------------------------------------------------------- 4. DDIM eta
def test_eta_is_a_config_value_and_the_paper_uses_the_winners_one():
    assert GenerationConfig().eta == 0.0  # today's behaviour stays the default
    assert load_profile("paper").generation.eta == 1.0  # yyua8222/Dcase2023_task7 samples DDIM with eta 1.0
    assert load_profile("cpu").generation.eta == load_profile("smoke").generation.eta == 0.0


@pytest.fixture(scope="module")
def tiny_ldm(tmp_path_factory):
    from foley_core.ldm.components import LdmComponents

    folder = tmp_path_factory.mktemp("eta") / "audioldm"
    make_tiny_audioldm_folder(folder, n_mels=N_MELS)
    return folder, LdmComponents.from_audioldm(folder, audio=load_profile("smoke").audio)


def _spy_eta(monkeypatch) -> list:
    from diffusers import DDIMScheduler

    etas, step = [], DDIMScheduler.step

    @functools.wraps(step)  # the sampler reads step's signature to know what it takes
    def spying(self, *args, **kwargs):
        etas.append(kwargs.get("eta"))
        return step(self, *args, **kwargs)

    monkeypatch.setattr(DDIMScheduler, "step", spying)
    return etas


def test_eta_reaches_the_ddim_step_and_keeps_rows_independent_of_their_batch(tiny_ldm, monkeypatch):
    from foley_core.ldm.sampling import sample_latents

    _, components = tiny_ldm
    etas = _spy_eta(monkeypatch)
    conditions = torch.randn(2, CONDITION_DIM, generator=torch.Generator().manual_seed(0))
    unconditional = torch.zeros(CONDITION_DIM)

    def sample(eta, rows=2):
        generators = [torch.Generator().manual_seed(s) for s in (5, 6)][:rows]
        return sample_latents(components, conditions[:rows], unconditional, guidance_scale=2.0, generators=generators,
                              steps=3, sampler="ddim", frames=16, eta=eta)

    deterministic = sample(0.0)
    assert etas == [0.0] * 3
    noisy = sample(1.0)
    assert etas[3:] == [1.0] * 3
    assert not torch.allclose(noisy, deterministic)  # the step's noise is drawn
    torch.testing.assert_close(sample(1.0), noisy, rtol=0, atol=0)  # ... from each row's own generator
    # ... not from its batch: alone, a row differs only by the UNet's batch rounding (as at eta 0)
    torch.testing.assert_close(sample(1.0, rows=1)[0], noisy[0], rtol=0, atol=1e-5 * float(noisy.abs().max()))


def test_the_profiles_eta_is_what_the_pipeline_samples_with(tiny_ldm, tmp_path, monkeypatch):
    from foley_core.clap.encoder import save_trained
    from foley_core.clap.towers import SmallClap, TowerConfig
    from foley_core.generation.adapter import EmbeddingAdapter
    from foley_core.generation.pipeline import FoleyPipeline, assemble_pipeline

    folder, components = tiny_ldm
    profile = _smoke_with_audioldm(tmp_path, folder, generation={"eta": 1.0, "scheduler": "ddim", "device": "cpu",
                                                                  "precision": "fp32"})
    torch.manual_seed(1)
    save_trained(SmallClap(TowerConfig(embed_dim=24, audio_channels=(8, 16), mel_bins=32)), profile.artifact_dir("clap"))
    components.save(profile.artifact_dir("ldm"))
    EmbeddingAdapter(CONDITION_DIM).save(profile.artifact_dir("finetune", "adapter"))
    pipeline = assemble_pipeline(profile, "adapter")
    assert pipeline.eta == 1.0
    etas = _spy_eta(monkeypatch)
    pipeline(["a dog bark"], seeds=[3], steps=2, guidance_scale=2.0)
    assert etas == [1.0, 1.0]
    pipeline.save_pretrained(tmp_path / "saved", clap_folder=profile.artifact_dir("clap"))
    assert json.loads((tmp_path / "saved/pipeline.json").read_text())["eta"] == 1.0
    assert FoleyPipeline.from_pretrained(tmp_path / "saved").eta == 1.0  # a promoted model samples as evaluated
    assert FoleyPipeline.from_audioldm(folder).eta == 0.0  # a plain AudioLDM folder: AudioLDMPipeline's default
    assert FoleyPipeline.from_audioldm(folder, profile).eta == 1.0  # ... unless a profile says otherwise


# ---------------------------------------------------------------- 5. multi-target from the training split
def test_multi_target_targets_are_training_clips_only(tmp_path):
    from foley_core.clap import EmbeddingCache
    from foley_core.data.ingest import MANIFEST, MANIFEST_COLUMNS
    from foley_core.generation.submission import class_targets

    label = "MovingMotorVehicle"
    profile = load_profile("smoke", {"paths": _paths(tmp_path)})
    assert profile.class_config(label).clap_floor is None  # multi-target, as in the winning system
    folder = layout(profile).dataset / label
    folder.mkdir(parents=True)
    splits = ["train", "val", "train", "val", "train", "train", "val", "train"]
    rows = [{**{c: "" for c in MANIFEST_COLUMNS}, "id": i, "class": label, "is_target": True, "caption": "a car",
             "split": split, "path": f"clips/{i:03d}.wav", "content_hash": f"hash{i}"} for i, split in enumerate(splits)]
    pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(folder / MANIFEST, index=False)

    class Clap:
        version = "v1"

    clap = Clap()
    # clip i's cached CLAP audio embedding is the i-th unit vector: every target names its clip
    cache = EmbeddingCache(layout(profile).embeddings(label), clap.version)
    cache._append("audio", [r["content_hash"] for r in rows], np.eye(len(splits), dtype=np.float32))

    class Pipeline:
        def scoring_clap(self):
            return clap

    targets = class_targets(Pipeline(), profile, label, n_clips=10)
    picked = set(np.argmax(targets, axis=1).tolist())
    train = {i for i, s in enumerate(splits) if s == "train"}
    assert picked == train  # every training clip a target, and no held-out clip among them


# ---------------------------------------------------------------- 6. the official FAD, skipped out loud
def _evaluated_artifacts(profile) -> None:
    """What the evaluation reads, by hand: a dataset manifest, both variants' generations, the DCASE export."""
    from foley_core.data.ingest import MANIFEST, MANIFEST_COLUMNS

    rng = np.random.default_rng(0)
    where = layout(profile)
    for c, label in enumerate(profile.class_names):
        clip = lambda i: (0.3 * np.sin(np.arange(16000) * (c + 1) * (1 + 0.05 * i) / 9)
                          + 0.05 * rng.standard_normal(16000)).astype(np.float32)  # noqa: E731
        folder, rows = where.dataset / label, []
        (folder / "clips").mkdir(parents=True)
        for i in range(6):
            sf.write(folder / f"clips/{i}.wav", clip(i), 16000)
            rows.append({**{k: "" for k in MANIFEST_COLUMNS}, "class": label, "is_target": True, "split": "val",
                         "path": f"clips/{i}.wav", "content_hash": f"{label}{i}"})
        pd.DataFrame(rows, columns=MANIFEST_COLUMNS).to_csv(folder / MANIFEST, index=False)
        for variant in ("adapter", "identity"):
            out = where.generation(variant, label)
            for kind in ("selected", "first"):
                (out / kind).mkdir(parents=True)
                for i in range(3):
                    sf.write(out / kind / f"{i:03d}.wav", clip(i + 10), 16000)
            summary = {"clips": 3, "mean_selected_score": 0.5, "mean_candidate_score": 0.4,
                       "mean_first_candidate_score": 0.4, "accepted": 3, "regenerations": 0}
            (out / "selection.json").write_text(json.dumps({"prompt": label, "summary": summary,
                                                            "slots": [{"score": 0.5}] * 3}))
        (where.dcase / label).mkdir(parents=True)
        for i in range(3):
            sf.write(where.dcase / label / f"{i:03d}.wav", clip(i + 10), 22050, subtype="PCM_16")


def test_a_missing_vggish_file_is_reported_as_a_skipped_official_fad(tmp_path):
    from foley_core.evaluation import evaluate_generation
    from foley_core.run_outputs import terminal_summary, write_run_outputs

    missing = tmp_path / "models/vggish/vggish-10086976.pth"
    profile = load_profile("smoke", {"paths": _paths(tmp_path), "evaluation": {"vggish_weights": str(missing)},
                                     "classes": [{"name": "DogBark", "prompts": ["a dog"]},
                                                 {"name": "Rain", "prompts": ["rain"]}]})
    _evaluated_artifacts(profile)
    metrics = evaluate_generation(profile, "v-test")
    assert metrics["official"] is None
    reason = metrics["official_fad_skipped"]
    assert str(missing) in reason and "not found" in reason and "evaluation.vggish_weights" in reason
    layout(profile).metrics.parent.mkdir(parents=True, exist_ok=True)
    layout(profile).metrics.write_text(json.dumps(metrics))
    folder = write_run_outputs(profile)
    report = (folder / "report.html").read_text()
    assert "Official DCASE FAD" in report and "skipped" in report and str(missing) in report
    assert f"official DCASE FAD skipped: {reason}" in terminal_summary(profile, folder)


def test_a_profile_without_vggish_weights_says_so_too(tmp_path):
    from foley_core.evaluation import official_fad_skip_reason

    assert "evaluation.vggish_weights is not set" in official_fad_skip_reason(load_profile("smoke"))
    weights = tmp_path / "vggish.pth"
    weights.write_bytes(b"")
    present = load_profile("smoke", {"evaluation": {"vggish_weights": str(weights)}})
    assert official_fad_skip_reason(present) is None


# ---------------------------------------------------------------- 7. docs/install.md
def test_every_doc_the_build_files_cite_exists():
    cited = set()
    for name in ("Makefile", "pyproject.toml", "README.md"):
        cited |= set(re.findall(r"docs/[\w.-]+\.md", (PROJECT_ROOT / name).read_text()))
    assert "docs/install.md" in cited
    assert [doc for doc in sorted(cited) if not (PROJECT_ROOT / doc).is_file()] == []
    install = (PROJECT_ROOT / "docs/install.md").read_text()
    for fact in ("make install", ".venv-dvc", "antlr4", "TORCH_SPEC", "HF_HUB_OFFLINE", "WANDB_MODE",
                 "DVC_NO_ANALYTICS", "PostgreSQL"):
        assert fact in install, fact
