"""The ``paper`` profile end to end on stand-in weights: `foley run` and `foley export-dcase` on the CPU.

Tiny random weights in the exact real layouts take the place of the downloads the profile names:
a diffusers AudioLDM folder with ``text_encoder/`` and ``tokenizer/`` (``audioldm_fixtures``), a
LAION-CLAP checkpoint with the released key names (HTSAT-tiny + RoBERTa, ``module.`` prefix) and
numpy scalars in it (``laion_fixtures``), torchvggish-layout VGGish weights (``vggish_fixtures``),
a 7-class folder in the DCASE dev-set layout, and no ``data/pretrain/captions.csv``. The overrides
only move paths under tmp and shrink sizes, steps and counts (plus the CPU for the device); every
code path is the paper profile's.

One module-scoped run; each test checks one requirement of the paper profile:
(a) the generation path places every model on ``generation.device`` with ``generation.precision``,
(b) the imported AudioLDM conditions through its own text encoder and guides against its own "",
(c) importing AudioLDM trains nothing and reads no clip, (d) the missing optional captions.csv is
a warning, (e) the LAION checkpoint with numpy scalars loads with ``weights_only`` + the allow-list,
(f) ``evaluation.vggish_weights`` gives the official DCASE FAD per class next to the logmel FAD,
(g) ``foley export-dcase`` makes exactly the clips the pipeline selected (one generation path),
(h) the graph fine-tunes the UNet on the dev set (``transfer``, as `foley finetune`) and gates it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import yaml
from audioldm_fixtures import CONDITION_DIM, make_tiny_audioldm_folder
from click.testing import CliRunner
from laion_fixtures import make_tiny_laion
from safetensors.torch import load_file
from vggish_fixtures import make_tiny_vggish_weights

from foley_core.core.config import DCASE_CLASS_IDS, load_profile
from foley_core.core.layout import layout
from foley_core.data.sources import UNLABELLED
from foley_core.generation.pipeline import FoleyPipeline
from foley_core.generation.prompts import candidate_prompts

# the module's shared stand-in run trains, generates and fine-tunes on the dev set: on 2 loaded
# cores its setup alone has passed the suite's 900 s per-test limit
pytestmark = pytest.mark.timeout(1800)

CLIPS_PER_CLASS = 2
FILES_PER_CLASS = 3  # enough for a validation recording in every class (ingest's stratified split)
DEV_SET = "DCASEFoleySoundSynthesisDevSet"  # the folder the data source and transfer.source both name
DEV_RATE = 22050  # the DCASE dev set's format: 22,050 Hz, mono, 16-bit (here 1 s events)
CLIP_SECONDS = 1.0  # a size: the model's clips (the DCASE export pads them to 4 s)
PRECISION, DTYPE = "bf16", torch.bfloat16  # the UNet's sampling dtype: not the default, so placement shows


def _dev_set(root: Path) -> Path:
    """A 7-class folder in the DCASE 2023 Task 7 dev-set layout; each class its own kind of sound."""
    rng = np.random.default_rng(0)
    t = np.arange(int(CLIP_SECONDS * DEV_RATE)) / DEV_RATE
    for i, label in enumerate(DCASE_CLASS_IDS):
        (root / label).mkdir(parents=True)
        for j in range(FILES_PER_CLASS):
            freq = 150.0 * (i + 1) * (1 + 0.1 * j)
            envelope = np.exp(-t * (0.5 + i)) if i % 2 else 0.5 + 0.5 * np.sin(2 * np.pi * (i + 1) * t) ** 2
            wave = 0.4 * envelope * np.sin(2 * np.pi * freq * t) + 0.02 * (i + 1) * rng.standard_normal(t.size)
            sf.write(root / label / f"{j:03d}.wav", np.clip(wave, -1, 1).astype(np.float32), DEV_RATE, subtype="PCM_16")
    return root


def paper_overrides(root: Path, models: dict[str, Path]) -> dict:
    """Paths under ``root``, the stand-in files, the CPU as device, and sizes, steps and counts for 2 cores
    (clip length, fine-tuning steps, sampler steps, clips per class and per searched prompt, regenerations,
    held-out files); nothing else."""
    return {
        "paths": {"data_dir": str(root / "data"), "artifacts_dir": str(root / "artifacts/paper"),
                  "outputs_dir": str(root / "outputs")},
        "data": {"sources": [{"kind": "folder", "path": str(root / "data" / DEV_SET)},
                             {"kind": "captioned_csv", "path": str(root / "data/pretrain/captions.csv")}]},
        "audio": {"clip_seconds": CLIP_SECONDS},
        "clap": {"checkpoint": str(models["laion"]), "tokenizer_path": str(models["roberta"])},
        # a model per class, as the winning system had: the classes marked `model: big` use a second folder
        "ldm": {"pretrained_path": str(models["audioldm"]), "models": {"big": str(models["audioldm_big"])}},
        "finetune": {"steps": 3, "batch_size": 4},
        # two of each class's three files held out for the dev-set fine-tune's gate: its FAD needs two clips
        "transfer": {"source": str(root / "data" / DEV_SET), "steps": 3, "batch_size": 4,
                     "eval_clips_per_class": 2, "val_fraction": 0.5},
        "trainer": {"accelerator": "cpu", "precision": "32-true", "num_workers": 0, "checkpoint_every_n_steps": 2},
        # the prompt search (class_prompts) with one clip per candidate prompt: its LAION CLAP scoring
        # was ~a fifth of this module's time at two
        "generation": {"steps": 2, "clips_per_class": CLIPS_PER_CLASS, "max_regenerations": 1, "device": "cpu",
                       "precision": PRECISION, "prompt_search_clips": 1},
        "evaluation": {"vggish_weights": str(models["vggish"])},
    }  # fmt: skip


def _fingerprint(module: torch.nn.Module) -> float:
    """Tells two random models apart: the sum of the first weight, in float32."""
    return float(next(module.parameters()).detach().float().sum())


def _prompts_of(profile, classes) -> set[str]:
    """Every prompt these classes may generate with: the prompt search (class_prompts) picks any of a
    class's candidates (configured prompts, held-out paraphrases), not always the first configured one."""
    return {c["prompt"] for label in classes for c in candidate_prompts(profile, label)}


def _big_prompts(profile) -> set[str]:
    """Every prompt a `model: big` class may generate with; no other class shares one of them."""
    big = _prompts_of(profile, profile.classes_of("big"))
    assert big and not big & _prompts_of(profile, set(profile.class_names) - set(profile.classes_of("big")))
    return big


def _devices(*modules) -> set[torch.device]:
    return {p.device for m in modules if m is not None for p in m.parameters()}


@pytest.fixture(scope="module")
def paper(tmp_path_factory):
    """The paper profile's whole pipeline on stand-in weights, then `foley export-dcase` of the model it evaluated."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    import foley_core.ldm.training as training
    from foley_core.cli import main
    from orchestration.runner import run_pipeline

    root = tmp_path_factory.mktemp("paper_standin")
    audioldm = root / "models/audioldm-s-full-v2"
    paper_audio = load_profile("paper").audio  # the folder is built to the paper's audio config
    components = make_tiny_audioldm_folder(audioldm, n_mels=paper_audio.n_mels, sample_rate=paper_audio.sample_rate,
                                           hop_length=paper_audio.hop_length, vocoder_gain=1e4)  # fmt: skip
    big = root / "models/audioldm-big"
    big_components = make_tiny_audioldm_folder(big, n_mels=paper_audio.n_mels, sample_rate=paper_audio.sample_rate,
                                               hop_length=paper_audio.hop_length, vocoder_gain=1e4, seed=1)  # fmt: skip
    laion, roberta, _ = make_tiny_laion(root / "models/laion_clap")
    models = {"audioldm": audioldm, "audioldm_big": big, "laion": laion, "roberta": roberta,
              "vggish": make_tiny_vggish_weights(root / "models/vggish/vggish-10086976.pth")}
    _dev_set(root / "data" / DEV_SET)
    overrides = paper_overrides(root, models)
    profile = load_profile("paper", overrides)

    seen = {"calls": [], "ldm_training": [], "laion_loads": [], "resolved": []}
    phase = ["foley run"]
    original_call = FoleyPipeline.__call__

    def spy_call(self, prompts, **kwargs):  # (a), (b), (g): what every generation call ran with
        out = original_call(self, prompts, **kwargs)
        clap = self.clap.model if self.clap is not None else None
        encoder = getattr(self.conditioner, "text_encoder", None)
        seen["calls"].append({
            "phase": phase[0], "prompt": prompts[0], "device": self.device, "precision": self.precision,
            "unet_dtype": self.ldm.unet.dtype, "unet_fingerprint": _fingerprint(self.ldm.unet),
            "fp32": {m.dtype for m in (self.ldm.vae, self.ldm.vocoder, encoder, self.adapter.linear.weight)},
            "devices": _devices(self.ldm.unet, self.ldm.vae, self.ldm.vocoder, encoder, self.adapter, clap),
            "clap_loaded": clap is not None, "conditioner": self.conditioner.kind,
            "unconditional": self.unconditional_embedding().float().cpu().clone(),
            "raw": self.conditioner.encode([prompts[0]]).float().cpu().clone(),
        })  # fmt: skip
        return out

    def recorder(name, real):
        def record(*args, **kwargs):
            seen["ldm_training"].append(name)
            return real(*args, **kwargs)
        return record

    real_load = torch.load

    def spy_load(f, *args, **kwargs):  # (e): how the LAION checkpoint is read
        if Path(str(f)) == laion:
            seen["laion_loads"].append(kwargs.get("weights_only"))
        return real_load(f, *args, **kwargs)

    import foley_core.generation.pipeline as pipeline_module
    import foley_core.stages as stages_module

    real_transfer = stages_module.finetune_on_recordings

    def in_transfer_phase(*args, **kwargs):  # (h): the dev-set fine-tune's own generation calls (its gate)
        phase[0] = "transfer"
        try:
            return real_transfer(*args, **kwargs)
        finally:
            phase[0] = "foley run"

    real_resolve = pipeline_module.resolve_device

    def spy_resolve(name="auto"):
        seen["resolved"].append(name)
        return real_resolve(name)

    safe_globals_before = set(torch.serialization.get_safe_globals())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(root / "dagster_home"))
        mp.setattr(FoleyPipeline, "__call__", spy_call)
        mp.setattr(torch, "load", spy_load)
        mp.setattr(pipeline_module, "resolve_device", spy_resolve)
        mp.setattr(stages_module, "finetune_on_recordings", in_transfer_phase)
        # (c): the LDM training path (VAE / UNet / vocoder fits) and its corpus readers; the
        # adapter's fine-tuning binds its own names and is not recorded here
        for name in ("train_ldm", "fit", "load_waveforms", "compute_log_mels"):
            mp.setattr(training, name, recorder(name, getattr(training, name)))
        lines: list[str] = []
        outcome = run_pipeline("paper", overrides, echo=lines.append)
        with DagsterInstance.get() as instance:
            def metadata(asset):
                event = instance.get_latest_materialization_event(AssetKey(["paper", asset]))
                return event, {k: v.value for k, v in event.asset_materialization.metadata.items()}

            raw_event, raw_metadata = metadata("raw_foley_data")
            raw_logs = [e.user_message for e in instance.all_logs(raw_event.run_id)]
            stage_metadata = {name: metadata(name)[1] for name in
                              ("pretrained_ldm", "clap_model", "finetuned_adapter", "evaluation_metrics",
                               "promoted_pipeline", "finetuned_model")}  # fmt: skip
            gate_check = instance.get_latest_asset_check_evaluation_record(
                AssetCheckKey(AssetKey(["paper", "finetuned_model"]), "transfer_gate")).evaluation

        phase[0] = "export-dcase"
        profile_file = root / "paper-standin.yaml"  # the same profile as a file: `--profile` takes a path
        profile_file.write_text(yaml.safe_dump(profile.model_dump(mode="json")))
        export = root / "submission"
        evaluated = layout(profile).pipelines / "base"  # latest may be the dev-set fine-tune, if its gate passed
        result = CliRunner().invoke(main, ["export-dcase", str(export), "--clips-per-class", str(CLIPS_PER_CLASS),
                                           "--model", str(evaluated), "--profile", str(profile_file)])  # fmt: skip
    return {"root": root, "profile": profile, "outcome": outcome, "lines": lines, "components": components,
            "big_components": big_components,
            "models": models, "seen": seen, "raw_metadata": raw_metadata, "raw_logs": raw_logs,
            "metadata": stage_metadata, "export": export, "export_result": result, "gate_check": gate_check,
            "safe_globals_before": safe_globals_before}  # fmt: skip


def _read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_the_run_promotes_a_model_with_a_valid_dcase_export(paper):
    from foley_core.export import validate_dcase

    profile, where = paper["profile"], layout(paper["profile"])
    assert paper["outcome"].failed_checks == [], paper["lines"]
    assert paper["metadata"]["promoted_pipeline"]["promoted"] is True, paper["metadata"]["promoted_pipeline"]
    metrics = _read(where.metrics)
    base = where.pipelines / "base"  # the graph's model; `latest` serves the dev-set fine-tune if it passed (h)
    assert base.resolve().name == metrics["model_version"] == _read(base / "pipeline.json")["model_version"]
    assert validate_dcase(where.dcase, classes=profile.class_names, clips_per_class=CLIPS_PER_CLASS) == []
    assert sorted(p.name for p in (where.dcase / "DogBark").iterdir()) == ["000.wav", "001.wav"]
    assert (paper["outcome"].output_dir / "report.html").is_file()


def test_a_generation_places_every_model_on_the_configured_device_and_precision(paper):
    """(a): every generation call (the assets, the dev-set fine-tune's gate, the export) ran on
    ``generation.device`` with the UNet in ``generation.precision`` (bf16 here, not the fp32 default: only
    ``place`` sets it) and the rest float32."""
    calls, profile = paper["seen"]["calls"], paper["profile"]
    device = torch.device(profile.generation.device)
    assert {c["phase"] for c in calls} == {"foley run", "transfer", "export-dcase"}
    for call in calls:
        assert call["device"] == device and call["devices"] == {device}, call
        assert call["precision"] == PRECISION and call["unet_dtype"] == DTYPE, call
        assert call["fp32"] == {torch.float32}, call
        assert call["clap_loaded"]  # candidates were scored by the LAION CLAP, on the same device
    # the device comes from the profile: every resolution in the run and the export asked for it
    assert paper["seen"]["resolved"] and set(paper["seen"]["resolved"]) == {profile.generation.device}


def test_the_imported_audioldm_conditions_through_its_own_text_encoder(paper):
    """(b): conditioning vectors and the guidance's "no condition" come from the AudioLDM folder's text
    encoder (16-d here), never from the LAION CLAP (512-d), which only scores."""
    calls, profile = paper["seen"]["calls"], paper["profile"]
    big_prompts = _big_prompts(profile)

    def embed(components, text: str) -> torch.Tensor:  # as diffusers' AudioLDMPipeline._encode_prompt
        encoder, tokenizer = components["text_encoder"].eval(), components["tokenizer"]
        tokens = tokenizer([text], padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                           return_tensors="pt")  # fmt: skip
        with torch.no_grad():
            return F.normalize(encoder(tokens.input_ids, attention_mask=tokens.attention_mask).text_embeds, dim=-1)[0]

    for call in calls:  # each class through the text encoder of the model it generates with
        components = paper["big_components"] if call["prompt"] in big_prompts else paper["components"]
        assert call["conditioner"] == "audioldm_text"
        assert call["unconditional"].shape == (CONDITION_DIM,) and call["unconditional"].abs().sum() > 0
        torch.testing.assert_close(call["unconditional"], embed(components, ""), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(call["raw"][0], embed(components, call["prompt"]), atol=1e-5, rtol=1e-5)

    where = layout(paper["profile"])
    saved = _read(where.pipelines / "base" / "pipeline.json")
    assert saved["conditioner"]["kind"] == "audioldm_text" and saved["conditioner"]["dim"] == CONDITION_DIM
    assert saved["unconditional"] == saved["conditioner"]["unconditional"] == "empty_prompt"
    assert saved["convention"] == "diffusers" and saved["clap_source"] == "laion"
    assert saved["clap_version"] == paper["metadata"]["clap_model"]["version"]  # LAION scores only
    # the adapter was fine-tuned on the same text encoder's embeddings
    assert paper["metadata"]["finetuned_adapter"]["conditioner_version"] == saved["conditioner"]["version"]


def test_importing_audioldm_trains_nothing_and_reads_no_clip(paper):
    """(c): the LDM stage installs the folder as it is: no VAE / UNet / vocoder fit, no clip decoded or
    encoded for it, no LDM training folders; the metadata names the import and its content hash."""
    where, source = layout(paper["profile"]), paper["models"]["audioldm"]
    assert paper["seen"]["ldm_training"] == []
    meta = paper["metadata"]["pretrained_ldm"]
    assert meta["imported_from"] == str(source) and len(meta["content_hash"]) == 32
    imported = _read(where.ldm / "metrics.json")
    assert imported["imported"] and imported["content_hash"] == meta["content_hash"]
    assert all(imported[part]["steps"] == 0 for part in ("vae", "unet", "vocoder"))
    parts = (("unet", "diffusion_pytorch_model"), ("vae", "diffusion_pytorch_model"), ("vocoder", "model"))
    for part, weights in parts:  # installed byte for byte
        ours = where.ldm / part / f"{weights}.safetensors"
        assert ours.read_bytes() == (source / part / f"{weights}.safetensors").read_bytes(), part
    trained = sorted(p.relative_to(where.root) for p in where.root.rglob("training") if p.is_dir())
    # only the adapter's fine-tuning and, after the promotion, the dev-set fine-tune (h) trained
    assert trained == [Path("finetune/training"), Path("transfer") / DEV_SET / "training"], trained
    assert not (where.ldm / "vae" / "metrics.json").exists()


def test_a_missing_optional_captions_csv_is_a_warning_not_an_abort(paper):
    """(d)"""
    profile, where = paper["profile"], layout(paper["profile"])
    missing = Path(profile.data.sources[1].path)
    assert not missing.exists()
    assert any(str(missing) in line and "skipped" in line for line in paper["raw_logs"] if line), paper["raw_logs"]
    assert paper["raw_metadata"]["files_per_class"] == {c: FILES_PER_CLASS for c in DCASE_CLASS_IDS}
    assert paper["raw_metadata"]["versioned_by"] == "content-hash"  # data outside the project: no DVC
    assert (where.record("foley_dataset", UNLABELLED)).is_file()  # the captioned partition ran, empty


def test_the_laion_checkpoint_with_numpy_scalars_loads_weights_only(paper):
    """(e): the checkpoint needs the numpy-scalar allow-list (plain weights_only refuses it), every read of
    it was weights_only=True, and the allow-list did not outlive the reads."""
    laion = paper["models"]["laion"]
    with pytest.raises(Exception, match="numpy"):
        torch.load(laion, weights_only=True)
    assert paper["seen"]["laion_loads"] and set(paper["seen"]["laion_loads"]) == {True}
    assert set(torch.serialization.get_safe_globals()) == paper["safe_globals_before"]
    where = layout(paper["profile"])
    assert where.record("clap_model").is_file()
    meta = paper["metadata"]["clap_model"]
    assert len(meta["version"]) == 16 and meta["val_clips"] >= len(DCASE_CLASS_IDS)


def test_vggish_weights_give_the_official_fad_per_class(paper):
    """(f): ``evaluation.embedder`` (logmel, the paper's) for the held-out FAD/KAD, and with
    ``evaluation.vggish_weights`` present the official DCASE FAD of every class."""
    from foley_core.evaluation import make_profile_embedder

    profile = paper["profile"]
    metrics = _read(layout(profile).metrics)
    assert profile.evaluation.embedder == load_profile("paper").evaluation.embedder == "logmel"
    assert metrics["embedder"] == make_profile_embedder(profile).name and metrics["embedder"].startswith("logmel")
    assert all(np.isfinite(row["fad"]) for row in metrics["per_class"].values())
    official = metrics["official"]
    assert official is not None and set(official["per_class"]) == set(DCASE_CLASS_IDS)
    assert all(np.isfinite(v) and v > 0 for v in official["per_class"].values()), official
    assert np.isclose(official["mean_fad"], np.mean(list(official["per_class"].values())))
    assert paper["metadata"]["evaluation_metrics"]["official_mean_fad"] == official["mean_fad"]
    # the setting is read, not assumed: the same evaluation with evaluation.embedder = vggish uses VGGish
    from foley_core.evaluation import evaluate_generation

    settings = profile.evaluation.model_copy(update={"embedder": "vggish"})
    again = evaluate_generation(profile.model_copy(update={"evaluation": settings}), metrics["model_version"])
    assert again["embedder"] == "vggish" and again["official"] == official
    assert again["per_class"] != metrics["per_class"]


def test_export_dcase_makes_the_pipelines_clips(paper):
    """(g): `foley export-dcase` with the promoted model writes, for the same seeds, exactly the clips the
    generation asset selected: one generation path (selection, multi-target) for both."""
    from foley_core.export import validate_dcase

    result, export, profile = paper["export_result"], paper["export"], paper["profile"]
    assert result.exit_code == 0, result.output
    assert validate_dcase(export, classes=profile.class_names, clips_per_class=CLIPS_PER_CLASS) == []
    where = layout(profile)
    picked = []
    for label in profile.class_names:
        selection = _read(where.generation("adapter", label) / "selection.json")
        picked += [(slot["attempt"], slot["index"]) for slot in selection["slots"]]
        for name in ("000.wav", "001.wav"):
            exported = sf.read(export / label / name, dtype="int16")[0].astype(int)
            selected = sf.read(where.dcase / label / name, dtype="int16")[0].astype(int)
            assert np.abs(selected).max() > 1000, f"{label}/{name} is silent: the comparison would prove nothing"
            # the asset writes the DCASE clip from its stored 16-bit selection, the export from the floats:
            # the same clip up to that rounding (a different candidate or seed differs by thousands)
            assert np.abs(exported - selected).max() <= 2, f"{label}/{name}"
    assert {index for _, index in picked} != {0}  # CLAP selection chose beyond the first candidate


def test_each_class_generates_with_its_named_model_in_the_run_and_the_export(paper):
    """A model per class: `model: big` classes (MovingMotorVehicle, Rain) use the second AudioLDM folder,
    in the generation asset and in `foley export-dcase`; the promoted folder carries it."""
    profile, where = paper["profile"], layout(paper["profile"])
    small = _fingerprint(paper["components"]["unet"])
    big = _fingerprint(paper["big_components"]["unet"])
    assert small != big
    big_prompts = _big_prompts(profile)
    assert profile.classes_of("big") == ["MovingMotorVehicle", "Rain"]
    for call in paper["seen"]["calls"]:
        if call["phase"] == "transfer":  # (h): its gate generates with the fine-tuned UNet too
            continue
        expected = big if call["prompt"] in big_prompts else small
        assert call["unet_fingerprint"] == pytest.approx(expected, rel=1e-2), call["prompt"]  # bf16 rounding
    assert {c["phase"] for c in paper["seen"]["calls"] if c["prompt"] in big_prompts} == {"foley run", "export-dcase"}
    assert paper["metadata"]["pretrained_ldm"]["model big"]["classes"] == ["MovingMotorVehicle", "Rain"]
    saved = _read(where.pipelines / "base" / "pipeline.json")
    assert saved["class_models"] == {"MovingMotorVehicle": "big", "Rain": "big"}
    assert (where.pipelines / "base" / "models" / "big" / "pipeline.json").is_file()
    assert (where.finetune("adapter", "big") / "metrics.json").is_file()  # its own adapter


def test_the_graph_fine_tunes_the_unet_on_the_dev_set_and_gates_it(paper):
    """(h): after the promotion, the paper graph fine-tunes the promoted model's UNet (whole, with the adapter)
    on the dev set through the transfer step `foley finetune` runs, and its gate compares base and fine-tuned
    clips with held-out dev clips. The `model: big` classes keep their model: only the main one is fine-tuned."""
    profile, where = paper["profile"], layout(paper["profile"])
    assert "finetuned_model" in paper["outcome"].materialised, paper["outcome"].materialised
    record = _read(where.transfer(DEV_SET) / "transfer.json")
    small_classes = [c for c in profile.class_names if profile.model_of(c) is None]
    assert record["source"] == str(Path(profile.data.sources[0].path).resolve())  # the dev set the graph ingests
    assert record["train"] == "unet" and record["classes"] == small_classes
    assert all(split == {"train": 1, "val": 2} for split in record["split"].values()), record["split"]  # by file
    unet = paper["components"]["unet"]
    assert record["generator"]["unet_trained_parameters"] == sum(p.numel() for p in unet.parameters())  # not LoRA
    assert record["clap"]["kept"] is False  # the LAION CLAP scores as it is
    gated_classes = {who: set(record["gate"][who]["per_class"]) for who in ("base", "finetuned")}
    assert gated_classes == {"base": set(small_classes), "finetuned": set(small_classes)}

    gate_check, problems = paper["gate_check"], record["gate"]["problems"]
    assert gate_check is not None and gate_check.passed == (not problems)
    meta = paper["metadata"]["finetuned_model"]
    assert meta["promoted"] == (not problems) and meta["finetuned_model"] == record["model_version"]
    served = _read(where.pipelines / "latest" / "pipeline.json")["model_version"]
    assert served == (record["model_version"] if not problems else _read(where.metrics)["model_version"])

    # the candidate's UNet moved from the imported one; the gate generated the small classes, and only them
    weights = "unet/diffusion_pytorch_model.safetensors"
    tuned, imported = load_file(where.transfer(DEV_SET) / "model/ldm" / weights), load_file(where.ldm / weights)
    assert tuned.keys() == imported.keys() and any(not torch.equal(tuned[k], imported[k]) for k in tuned)
    gated = {c["prompt"] for c in paper["seen"]["calls"] if c["phase"] == "transfer"}
    # each class generates with the prompt its search chose (any of its candidates), not always the first
    by_class = {label: gated & _prompts_of(profile, [label]) for label in small_classes}
    assert all(len(prompts) == 1 for prompts in by_class.values()), by_class
    assert gated == set().union(*by_class.values()), gated
