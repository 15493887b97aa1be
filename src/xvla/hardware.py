"""What this machine's matrix units can do, and the fastest *correct* inference setting for it.

One probe (:func:`probe`) and one chooser (:func:`choose`); everything that depends on the instruction
set asks them: ``XVLAPolicy.from_pretrained(..., fast=True)``, ``--fast`` on the commands, the int8
layers, the compiled attention, ``xvla info --hardware``.

Why the choice differs by CPU (figures per kind in docs/benchmarks.md):

- **AMX** (Intel Xeon 4th gen and later): bf16 and int8 GEMMs run on tiles; bf16 + compile keeps
  bf16's accuracy at a fraction of fp32's time.
- **AVX-512 VNNI** without AMX (e.g. AMD EPYC Zen 4): int8 dot products (``vpdpbusd``) run at about twice
  the bf16 rate, so int8 linears + compile are fastest. The rest stays in fp32: with bf16 there it is no
  faster overall (the GEMMs dominate), and bf16's rounding would be the larger part of the action error.
- **AVX2 only** (e.g. AMD EPYC Zen 3): no bf16 hardware, so oneDNN converts bf16 to fp32 around every
  GEMM and bf16 is several times *slower* than fp32. Without VNNI, u8 x s8 products are summed in
  pairs into int16 (``vpmaddubsw``), which saturates unless the weights keep to 7 bits
  (:mod:`xvla.model.int8_linear` does that here); so kept, int8 linears + compile still beat compiled
  fp32, with the rest in fp32.
- **CUDA**: bf16 + compile (the denoising loop replayed as CUDA graphs).

The CPU probes read torch's cpuinfo and honour the caps a user (or a test) sets for one process:
``ONEDNN_MAX_CPU_ISA`` (oneDNN's GEMMs) and ``ATEN_CPU_CAPABILITY`` (ATen's kernels).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import platform
import shutil
from dataclasses import dataclass

import torch

# oneDNN's ISA names (ONEDNN_MAX_CPU_ISA), in order, with what each one allows.
_ONEDNN_ISAS = (
    "SSE41",
    "AVX",
    "AVX2",
    "AVX2_VNNI",
    "AVX2_VNNI_2",
    "AVX512_CORE",
    "AVX512_CORE_VNNI",
    "AVX512_CORE_BF16",
    "AVX512_CORE_FP16",
    "AVX10_1_512",
    "AVX512_CORE_AMX",
    "AVX10_1_512_AMX",
    "AVX512_CORE_AMX_FP16",
    "AVX10_1_512_AMX_FP16",
    "AVX10_2_512",
    "AVX10_2_512_AMX_2",
)
_FIRST_VNNI = _ONEDNN_ISAS.index("AVX512_CORE_VNNI")
_AVX2_VNNI = (
    "AVX2_VNNI",
    "AVX2_VNNI_2",
)  # VNNI without AVX-512: below AVX512_CORE in the order, yet with VNNI
_FIRST_BF16 = _ONEDNN_ISAS.index("AVX512_CORE_BF16")
_FIRST_AMX = _ONEDNN_ISAS.index("AVX512_CORE_AMX")


def _cpu_flag(name: str) -> bool:
    probe = getattr(torch.cpu, f"_is_{name}_supported", None)
    return bool(probe and probe())


def _onednn_cap() -> int | None:
    """The index in :data:`_ONEDNN_ISAS` of ``ONEDNN_MAX_CPU_ISA`` (``DNNL_MAX_CPU_ISA``), or None: no cap."""
    value = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "").upper()
    if not value or value in ("ALL", "DEFAULT"):
        return None
    return _ONEDNN_ISAS.index(value) if value in _ONEDNN_ISAS else None


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@dataclass(frozen=True)
class Hardware:
    """What :func:`probe` found. ``amx`` / ``vnni`` / ``bf16`` are what oneDNN may use, after any cap."""

    cpu_model: str
    aten_capability: str  # ATen's vectorized kernels: DEFAULT, AVX2, AVX512 (after ATEN_CPU_CAPABILITY)
    onednn_cap: str | None  # ONEDNN_MAX_CPU_ISA, when set
    avx512: bool
    vnni: bool  # int8 dot products that sum u8 x s8 into int32 (no int16 saturation)
    bf16: bool  # bf16 GEMMs in hardware (AVX-512 bf16 or AMX)
    amx: bool  # AMX tiles (bf16 / int8 matrix units)
    cuda: str | None  # the first CUDA device's name, when there is one
    cxx: str | None  # the C++ compiler inductor builds CPU kernels with (compile=True needs one)

    def summary(self) -> str:
        """One line: what ``make test`` prints at the top, and ``xvla info --hardware`` starts with."""
        units = [name for name, has in (("AMX", self.amx), ("bf16", self.bf16), ("VNNI", self.vnni)) if has]
        parts = [
            f"CPU {self.cpu_model}",
            f"ATen {self.aten_capability}",
            "matrix units: " + (", ".join(units) or "none (fp32 FMA only)"),
        ]
        if self.onednn_cap:
            parts.append(f"ONEDNN_MAX_CPU_ISA={self.onednn_cap}")
        parts.append(f"CUDA: {self.cuda or 'none'}")
        parts.append(f"torch {torch.__version__}")
        return "; ".join(parts)


@functools.cache
def probe() -> Hardware:
    """Detect the machine once per process."""
    cap = _onednn_cap()

    def allowed(first: int) -> bool:
        return cap is None or cap >= first

    amx = _cpu_flag("amx_tile") and allowed(_FIRST_AMX)
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return Hardware(
        cpu_model=_cpu_model(),
        aten_capability=torch.backends.cpu.get_cpu_capability(),
        onednn_cap=os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA"),
        avx512=_cpu_flag("avx512") and allowed(_ONEDNN_ISAS.index("AVX512_CORE")),
        vnni=amx or (_cpu_flag("vnni") and (allowed(_FIRST_VNNI) or _ONEDNN_ISAS[cap] in _AVX2_VNNI)),
        bf16=amx or (_cpu_flag("avx512_bf16") and allowed(_FIRST_BF16)),
        amx=amx,
        cuda=cuda,
        cxx=next((path for name in ("c++", "g++", "clang++") if (path := shutil.which(name))), None),
    )


@dataclass(frozen=True)
class FastSetting:
    """An inference setting: what ``from_pretrained(..., fast=True)`` applies, and why."""

    device: str
    dtype: str
    compile: bool
    quantize: str | None
    reason: str

    def kwargs(self) -> dict[str, object]:
        """The ``XVLAPolicy.from_pretrained`` arguments for this setting."""
        return {
            "device": self.device,
            "dtype": self.dtype,
            "compile": self.compile,
            "quantize": self.quantize,
        }

    def flags(self) -> str:
        """The same setting as command-line flags."""
        out = f"--device {self.device} --dtype {self.dtype}"
        if self.quantize:
            out += f" --quantize {self.quantize}"
        return out + (" --compile" if self.compile else "")


def choose(device: str | torch.device | None = None, hw: Hardware | None = None) -> FastSetting:
    """The fastest correct setting for ``device`` (default: CUDA when there is one, else the CPU)."""
    hw = hw or probe()
    kind = torch.device(device).type if device not in (None, "auto") else ("cuda" if hw.cuda else "cpu")
    if kind == "cuda":
        return FastSetting(
            str(device) if device not in (None, "auto") else "cuda",
            "bfloat16",
            True,
            None,
            "GPU: bf16 with compiled graphs (CUDA graphs replay the denoising loop)",
        )
    if kind != "cpu":
        return FastSetting(kind, "float32", False, None, f"{kind}: no compiled or quantized path; eager fp32")
    if not hw.cxx:  # nothing compiles: the same choice, eager
        eager = choose(device, dataclasses.replace(hw, cxx="c++"))
        return dataclasses.replace(
            eager,
            compile=False,
            reason=eager.reason + "; eager, as there is no C++ "
            "compiler for the compiled graphs (install g++)",
        )
    if hw.amx:
        return FastSetting(
            "cpu",
            "bfloat16",
            True,
            None,
            "AMX tiles run bf16 GEMMs several times faster than fp32, at bf16's accuracy",
        )
    if hw.vnni:
        return FastSetting(
            "cpu",
            "float32",
            True,
            "int8",
            "VNNI without AMX: int8 GEMMs run at about twice the bf16 rate; the rest stays in fp32, "
            "which keeps the actions far closer to fp32's than bf16 does, at about the same speed",
        )
    return FastSetting(
        "cpu",
        "float32",
        True,
        "int8",
        "no bf16 units and no VNNI (AVX2/FMA): bf16 would be emulated, slower than fp32; int8 GEMMs "
        "with 7-bit weights (no int16 saturation) beat compiled fp32, and the rest stays in fp32",
    )


def emulated_bf16_warning(dtype: torch.dtype, device: torch.device) -> str | None:
    """The advice to give when a model in ``dtype`` on ``device`` would run bf16 without hardware for it."""
    if dtype != torch.bfloat16 or device.type != "cpu" or probe().bf16:
        return None
    better = choose("cpu")
    return (
        "dtype=bfloat16 on a CPU without bf16 units (no AMX, no AVX-512 bf16): every matmul is emulated in "
        "float32 and runs several times slower than float32. The fastest correct setting here is "
        f"{better.kwargs()} ({better.flags()}), or pass fast=True (--fast); see `xvla info --hardware`"
    )


def report(device: str | None = None) -> str:
    """What was detected, what ``fast=True`` would choose and why (``xvla info --hardware``)."""
    hw = probe()
    setting = choose(device, hw)
    lines = [hw.summary(), ""]
    width = max(len(f.name) for f in dataclasses.fields(hw))
    lines += [f"  {f.name:<{width}}  {getattr(hw, f.name)}" for f in dataclasses.fields(hw)]
    lines += [
        "",
        f"fast=True / --fast chooses: {setting.kwargs()}",
        f"  flags: {setting.flags()}",
        f"  why:   {setting.reason}",
    ]
    return "\n".join(lines)
