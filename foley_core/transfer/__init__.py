"""Fine-tune the accepted model on a user's own recordings: the paper's transfer step.

The paper pre-trains on broad data, then fine-tunes on the DCASE development set. Here the
"broad" model is the profile's accepted one (``pipelines/latest``) and the development set
is a folder of the user's recordings (``<Class>/<file>``, any subset of the classes, mixed
formats). ``finetune_on_recordings`` runs the whole step:

1. **Ingest** the folder (bad files quarantined, as everywhere) and split it *by recording*
   (``foley_core.data.recordings``): held-out clips are never slices of a training recording.
   Classes the profile routes to a named model (``ldm.models``) are left to that model.
2. **CLAP**: its audio tower learns the recordings (``foley_core.clap.adapt``), text side
   frozen, so selection ranks real candidates. Kept only if it classifies the held-out
   recordings at least as well as before and the profile's own validation clips no more than
   ``transfer.clap_max_drop`` worse.
3. **Generator**: the adapter (``--train adapter``), or adapter + UNet (``unet``), or adapter +
   UNet + vocoder (``all``), on the training recordings' latents, each paired with the text
   embeddings of its caption and its class's prompts. Condition dropout uses the vector the
   sampler guides against (``FoleyPipeline.unconditional_embedding``).
   The UNet trains whole, or as LoRA factors merged back after training (``transfer.unet_lora_rank``).
   With ``all``, each held class then keeps the fine-tuned vocoder only where it brings the
   class's clips closer to its *training* recordings, else the base's (``choose_vocoders``).
4. **Gate**: the base and the fine-tuned model generate the held classes with the same seeds
   and the profile's per-class selection; log-mel FAD and KAD to the held-out recordings. The
   rule is the main pipeline's (``registry.regression``, NaN refused) with no margin: the
   fine-tuned model must not be worse than the base on either mean.
5. **Promotion** (only past the gate): a new version in ``pipelines/`` that generates the held
   classes with the fine-tuned model and every other class exactly as the base did (its
   folder carries the base as ``models/base/``), with the lineage in ``pipeline.json``:
   base version, the recordings' data version and folder, the settings. ``latest`` moves to
   it; ``foley generate`` and ``foley export-dcase`` use it.

Everything is written under ``artifacts/<profile>/transfer/<name>/``; a finished fine-tune of
the same base, data, settings and code is reused (``foley run --force`` semantics: set
``FOLEY_RETRAIN=1`` to redo it).

The package's modules, one job each: ``recordings`` (ingest and split), ``training`` (the
networks it trains), ``gating`` (base against fine-tuned) and ``run`` (the whole step).
"""

from foley_core.transfer.gating import GateRefused, gate, summary_rows
from foley_core.transfer.recordings import SourceData, ingest_recordings
from foley_core.transfer.run import RESULT, TRAIN_CHOICES, finetune_on_recordings
from foley_core.transfer.training import choose_vocoders, finetune_generator, keeps_finetuned_vocoder

__all__ = ["RESULT", "TRAIN_CHOICES", "GateRefused", "SourceData", "choose_vocoders", "finetune_generator",
           "finetune_on_recordings", "gate", "ingest_recordings", "keeps_finetuned_vocoder", "summary_rows"]
