"""CLAP stage: text and audio encoders into one joint space, their training, and an embedding cache.

Two sources behind one interface (``ClapEncoder``): a pretrained LAION-CLAP checkpoint
(``paper`` profile) or a small CLAP trained contrastively on the ingested corpus
(``cpu``/``smoke``). Never ``import laion_clap`` (see ``_laion.py``).
"""

from foley_core.clap.cache import EmbeddingCache
from foley_core.clap.encoder import ClapEncoder, TrainedClapEncoder
from foley_core.clap.evaluate import evaluate_clap, load_paraphrases
from foley_core.clap.loading import load_clap
from foley_core.clap.train import train_clap

__all__ = [
    "ClapEncoder",
    "EmbeddingCache",
    "TrainedClapEncoder",
    "evaluate_clap",
    "load_clap",
    "load_paraphrases",
    "train_clap",
]
