"""Microcontroller targets: parse what users write, and the facts about each Cortex-M core that decide code.

TVM 0.27 refuses the legacy CLI form ``"c -mcpu=cortex-m4"``, which every tinyML tutorial uses, so tvmq parses it
itself. The core decides what the compiler may use (DSP SIMD such as SMLAD, an FPU, MVE) and the gcc flags.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Any

import tvm

from .errors import TargetError


@dataclass(frozen=True)
class Core:
    """One Cortex-M core: its ISA features and the arm-none-eabi-gcc flags that build for it."""

    name: str
    arch: str  # for humans: "armv7e-m"
    has_dsp: bool  # SMLAD/SXTB16/QADD8 ... (ARMv7E-M DSP extension)
    has_mve: bool  # Helium (ARMv8.1-M)
    fpu: str | None  # gcc -mfpu, None for soft float

    @property
    def cflags(self) -> list[str]:
        """gcc flags selecting the core, Thumb and the float ABI."""
        flags = [f"-mcpu={self.name}", "-mthumb"]
        if self.fpu is None:
            return [*flags, "-mfloat-abi=soft"]
        # no fused multiply-add: float steps (quantize, TFLM's MEAN) must round exactly as on the host
        return [*flags, "-mfloat-abi=hard", f"-mfpu={self.fpu}", "-ffp-contract=off"]


CORES: dict[str, Core] = {
    c.name: c
    for c in (
        Core("cortex-m0", "armv6-m", has_dsp=False, has_mve=False, fpu=None),
        Core("cortex-m0plus", "armv6-m", has_dsp=False, has_mve=False, fpu=None),
        Core("cortex-m3", "armv7-m", has_dsp=False, has_mve=False, fpu=None),
        Core("cortex-m4", "armv7e-m", has_dsp=True, has_mve=False, fpu="fpv4-sp-d16"),
        Core("cortex-m7", "armv7e-m", has_dsp=True, has_mve=False, fpu="fpv5-d16"),
        Core("cortex-m33", "armv8-m.main", has_dsp=True, has_mve=False, fpu="fpv5-sp-d16"),
        Core("cortex-m55", "armv8.1-m.main", has_dsp=True, has_mve=True, fpu="auto"),
    )
}


@dataclass(frozen=True)
class MicroTarget:
    """A parsed tvmq target: C source for one Cortex-M core."""

    core: Core

    @property
    def tvm_target(self) -> tvm.target.Target:
        return tvm.target.Target({"kind": "c", "mcpu": self.core.name})

    @property
    def legacy_string(self) -> str:
        return f"c -mcpu={self.core.name}"

    def to_json(self) -> dict[str, Any]:
        c = self.core
        return {"kind": "c", "mcpu": c.name, "arch": c.arch, "has_dsp": c.has_dsp, "has_mve": c.has_mve,
                "fpu": c.fpu, "cflags": c.cflags}  # fmt: skip


def _supported() -> str:
    return ", ".join(CORES)


def _from_fields(kind: Any, mcpu: Any, what: str) -> MicroTarget:
    if kind != "c":
        raise TargetError(f"target {what}: kind {kind!r} is not supported; tvmq emits C for Cortex-M, use "
                          f"kind 'c' with -mcpu one of: {_supported()} (e.g. \"c -mcpu=cortex-m4\")")  # fmt: skip
    if mcpu is None:
        raise TargetError(f"target {what}: no -mcpu given; choose one of: {_supported()}")
    mcpu = str(mcpu)
    if mcpu not in CORES:
        raise TargetError(f"target {what}: core {mcpu!r} is not supported; choose one of: {_supported()}")
    return MicroTarget(CORES[mcpu])


def parse_target(target: str | dict | tvm.target.Target | MicroTarget) -> MicroTarget:
    """Accept ``"c -mcpu=cortex-m4"``, ``{"kind": "c", "mcpu": "cortex-m4"}`` or a ``tvm.target.Target``."""
    if isinstance(target, MicroTarget):
        return target
    if isinstance(target, tvm.target.Target):
        return _from_fields(target.kind.name, target.attrs.get("mcpu"), f"{str(target)!r}")
    if isinstance(target, dict):
        unknown = set(target) - {"kind", "mcpu", "keys", "tag", "feature.has_dsp", "feature.has_mve"}
        if unknown:
            raise TargetError(f"target {target!r}: unknown keys {sorted(unknown)}; give 'kind' and 'mcpu'")
        return _from_fields(target.get("kind"), target.get("mcpu"), f"{target!r}")
    if isinstance(target, str):
        return _parse_string(target)
    raise TargetError(f"target must be a string such as \"c -mcpu=cortex-m4\", a dict or a tvm.target.Target, "
                      f"got {type(target).__name__}")  # fmt: skip


def _parse_string(text: str) -> MicroTarget:
    try:
        words = shlex.split(text)
    except ValueError as err:
        raise TargetError(f"target {text!r} cannot be parsed: {err}") from None
    if not words:
        raise TargetError(f'target is empty; write e.g. "c -mcpu=cortex-m4" (cores: {_supported()})')
    kind, options = words[0], words[1:]
    mcpu = None
    for opt in options:
        key, sep, value = opt.lstrip("-").partition("=")
        if not opt.startswith("-") or not sep or not value:
            raise TargetError(f"target {text!r}: option {opt!r} is not of the form -key=value")
        if key == "mcpu":
            mcpu = value
        elif key not in ("keys", "model"):
            raise TargetError(f"target {text!r}: unknown option -{key}; tvmq understands -mcpu")
    return _from_fields(kind, mcpu, repr(text))
