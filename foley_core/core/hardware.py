"""Which numeric precision this machine runs fast: what ``precision: auto`` resolves to.

bf16 pays only where the hardware computes it natively. On a CPU that means AVX512-BF16 or
AMX (Intel Cooper Lake / Sapphire Rapids and newer, AMD Zen 4 and newer); everywhere else
PyTorch emulates bf16 by converting around fp32 kernels, and a training step under bf16
autocast is many times *slower* than fp32 (measured: docs/benchmarks.md). So ``auto`` is:

- CUDA: bf16 where the card supports it (Ampere and newer), else fp16;
- CPU with native bf16, and neither PyTorch's kernel dispatch nor oneDNN capped below it: bf16;
- any other CPU: fp32.

The caps matter because they are how a CPU without AVX-512 is emulated on one that has it
(``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``): with either set below AVX-512, the
bf16 kernels are not used even though the silicon has them.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

# oneDNN ISA caps (ONEDNN_MAX_CPU_ISA, also read as DNNL_MAX_CPU_ISA) at or above the first ISA
# with native bf16 dot products (avx512_core_bf16). Any name not listed here caps below it.
_ONEDNN_BF16_ISAS = {
    "ALL", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16",
    "AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2",
}
# PyTorch's own kernel dispatch (ATEN_CPU_CAPABILITY) must reach AVX-512 for its bf16 kernels.
_ATEN_BF16_CAPABILITIES = {"AVX512", "AVX512_BF16", "AMX", "AVX512_VNNI"}


@dataclass(frozen=True)
class CpuPrecision:
    native_bf16: bool
    reason: str  # one line a person can read: which flag or cap decided


def cpu_flags() -> set[str]:
    """The CPU's feature flags as the kernel reports them (empty where /proc/cpuinfo is absent)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith(("flags", "Features")):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def aten_capability() -> str:
    """The kernel set PyTorch dispatches to (``AVX2``, ``AVX512``, ...), honouring ATEN_CPU_CAPABILITY."""
    return str(torch.backends.cpu.get_cpu_capability()).upper()


def detect_cpu_precision(flags: set[str] | None = None, capability: str | None = None,
                         onednn_cap: str | None = None) -> CpuPrecision:
    """Whether bf16 runs natively here. The arguments default to this machine (tests pass their own)."""
    flags = cpu_flags() if flags is None else flags
    capability = aten_capability() if capability is None else capability.upper()
    if onednn_cap is None:
        onednn_cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL"
    onednn_cap = onednn_cap.upper()
    native = sorted(flags & {"avx512_bf16", "amx_bf16"})
    if not native:
        return CpuPrecision(False, "no avx512_bf16 or amx_bf16 in the CPU flags: bf16 would be emulated")
    if capability not in _ATEN_BF16_CAPABILITIES:
        return CpuPrecision(False, f"{'/'.join(native)} present but PyTorch dispatches {capability} kernels "
                                   "(ATEN_CPU_CAPABILITY)")
    if onednn_cap not in _ONEDNN_BF16_ISAS:
        return CpuPrecision(False, f"{'/'.join(native)} present but oneDNN is capped at {onednn_cap} "
                                   "(ONEDNN_MAX_CPU_ISA)")
    return CpuPrecision(True, f"native {'/'.join(native)}, PyTorch {capability} kernels")


@functools.lru_cache(maxsize=None)
def this_cpu() -> CpuPrecision:
    return detect_cpu_precision()


def _uses_cuda(accelerator: str) -> bool:
    accelerator = accelerator.lower()
    if accelerator.startswith(("cuda", "gpu")):
        return True
    return accelerator == "auto" and torch.cuda.is_available()


def _cuda_bf16() -> bool:
    return torch.cuda.is_available() and torch.cuda.is_bf16_supported()


_LIGHTNING_NAMES = {"bf16": "bf16-mixed", "fp16": "16-mixed", "fp32": "32-true"}


def _auto_dtype(device: str) -> tuple[str, str]:
    """(bf16 | fp16 | fp32, why): what ``auto`` means on ``device`` (an accelerator or device name)."""
    if _uses_cuda(device):
        return ("bf16", "CUDA card with bf16") if _cuda_bf16() else ("fp16", "CUDA card without bf16")
    cpu = this_cpu()
    return ("bf16" if cpu.native_bf16 else "fp32"), cpu.reason


def resolve_training_precision(precision: str, accelerator: str) -> tuple[str, str]:
    """(Lightning precision, why) for a model's ``precision`` on ``trainer.accelerator``."""
    if precision != "auto":
        return precision, "set in the profile"
    dtype, why = _auto_dtype(accelerator)
    return _LIGHTNING_NAMES[dtype], why


def resolve_sampling_precision(precision: str, device: str) -> tuple[str, str]:
    """(fp32 | bf16 | fp16, why) for ``generation.precision`` on ``generation.device``."""
    return (precision, "set in the profile") if precision != "auto" else _auto_dtype(device)


def describe_cpu() -> str:
    """``<model name>, PyTorch <capability> kernels, oneDNN cap <cap>``: the line every timing names."""
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "none"
    return f"{cpu_name()}, PyTorch {aten_capability()} kernels, oneDNN cap {cap}"
