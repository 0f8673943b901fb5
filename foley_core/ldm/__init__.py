"""Latent diffusion stage: mel front end, VAE, conditional UNet, HiFi-GAN vocoder (diffusers components).

Training (``train_vae``, ``train_vocoder``, ``train_unet``, ``train_ldm``) writes safetensors +
JSON; ``LdmComponents`` loads them (or a diffusers AudioLDM folder); ``sampling`` turns
conditioning vectors into 16 kHz waveforms. See docs/ldm.md.
"""

from foley_core.ldm.components import LdmComponents, ldm_code_version
from foley_core.ldm.evaluation import reconstruction_report, spectrogram_images
from foley_core.ldm.mel import MelFrontEnd, MelNormalisation, griffin_lim
from foley_core.ldm.sampling import decode_latents, generate_waveforms, mel_to_waveform, reconstruct, sample_latents
from foley_core.ldm.training import train_ldm, train_unet, train_vae, train_vocoder

__all__ = [
    "LdmComponents", "MelFrontEnd", "MelNormalisation", "decode_latents", "generate_waveforms", "griffin_lim",
    "ldm_code_version", "mel_to_waveform", "reconstruct", "reconstruction_report", "sample_latents",
    "spectrogram_images", "train_ldm", "train_unet", "train_vae", "train_vocoder",
]  # fmt: skip
