"""``QuantizedModel``: the integer Relax module with its metadata, run on the host bit-exactly."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import tvm

from ..config import QuantConfig
from ..errors import CalibrationDataError
from ..host import HostRunner
from ..relay_passes import InsertFakeQuant
from ..relay_passes.layers import Layer
from .data import as_samples
from .plan import QuantPlan
from .qparams import QParams


@dataclass
class QuantizedModel:
    """A model quantized by tvmq.

    ``int_mod`` holds ``main`` (int8 -> int8, integer-only), ``quantize_input`` and ``dequantize_output``;
    ``float_mod`` is the normalised float model it came from.
    """

    float_mod: tvm.IRModule
    int_mod: tvm.IRModule
    layers: list[Layer]
    plan: QuantPlan
    config: QuantConfig
    ptq_report: dict[str, Any] = field(default_factory=dict)  # what each tvmq.ptq step did (QuantConfig.ptq)
    _runners: dict[str, HostRunner] = field(default_factory=dict, repr=False)

    # -- interface ---------------------------------------------------------------------------------------------
    @cached_property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.float_mod["main"].params[0].ty.shape)

    @cached_property
    def output_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.float_mod["main"].body.body.ty.shape)

    @property
    def input_qparams(self) -> QParams:
        return self.plan.input

    @property
    def output_qparams(self) -> QParams:
        return self.plan.output

    # -- execution ---------------------------------------------------------------------------------------------
    def _runner(self, which: str) -> HostRunner:
        if which not in self._runners:
            mod = {"int": self.int_mod, "float": self.float_mod}.get(which)
            if mod is None:
                mod = InsertFakeQuant(self.layers, self.plan)(self.float_mod)
            self._runners[which] = HostRunner(mod)
        return self._runners[which]

    def _per_sample(self, which: str, function: str, batch: np.ndarray, out_shape) -> np.ndarray:
        runner = self._runner(which)
        outs = [runner.run(function, sample[None]) for sample in batch]
        return np.concatenate(outs) if outs else np.zeros((0, *out_shape[1:]))

    def quantize_input(self, x: np.ndarray) -> np.ndarray:
        """Float inputs ``(N, *input_shape[1:])`` -> int8 codes, with the model's compiled quantize op."""
        batch = as_samples(x, self.input_shape, what="inputs")
        return self._per_sample("int", "quantize_input", batch, self.input_shape)

    def dequantize_output(self, y: np.ndarray) -> np.ndarray:
        """int8 output codes -> float, with the model's compiled dequantize op."""
        batch = self._int_batch(y, self.output_shape, "outputs")
        return self._per_sample("int", "dequantize_output", batch, self.output_shape)

    def run_int(self, x: np.ndarray) -> np.ndarray:
        """Run the integer-only graph on int8 inputs; returns raw int8 outputs ``(N, *output_shape[1:])``."""
        batch = self._int_batch(x, self.input_shape, "int8 inputs")
        return self._per_sample("int", "main", batch, self.output_shape)

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Float in, float out, through the integer graph (quantize -> integer ops -> dequantize)."""
        return self.dequantize_output(self.run_int(self.quantize_input(x)))

    def simulate(self, x: np.ndarray) -> np.ndarray:
        """The fake-quant float model (same qparams, float arithmetic)."""
        return self._per_sample("sim", "main", as_samples(x, self.input_shape, what="inputs"), self.output_shape)

    def run_float(self, x: np.ndarray) -> np.ndarray:
        """The original (normalised) float model: the accuracy reference."""
        return self._per_sample("float", "main", as_samples(x, self.input_shape, what="inputs"), self.output_shape)

    def int_vs_simulated(self, x: np.ndarray) -> dict[str, float]:
        """How far integer outputs are from the simulated ones, in output LSBs (quantization steps)."""
        ints = self.run_int(self.quantize_input(x)).astype(np.int32)
        sim = self.output_qparams.quantize(self.simulate(x)).astype(np.int32)
        diff = np.abs(ints - sim)
        return {"max_lsb": int(diff.max()), "fraction_over_1_lsb": float(np.mean(diff > 1)),
                "fraction_exact": float(np.mean(diff == 0))}  # fmt: skip

    def _int_batch(self, x: np.ndarray, shape: tuple[int, ...], what: str) -> np.ndarray:
        x = np.asarray(x)
        if x.dtype != np.int8:
            raise CalibrationDataError(f"{what} must be int8 codes, got dtype {x.dtype}; use quantize_input first")
        if x.shape == shape[1:]:
            return x[None]
        if x.shape[1:] != shape[1:]:
            raise CalibrationDataError(f"{what} have shape {x.shape}; expected (N, {', '.join(map(str, shape[1:]))})")
        return x

    # -- report ------------------------------------------------------------------------------------------------
    def layer_stats(self) -> list[dict[str, Any]]:
        """Per layer: op, shapes, bits, MACs, BOPs, weight bytes, activation bytes."""
        rows = []
        for layer, lp in zip(self.layers, self.plan.layers, strict=True):
            w_bits = lp.config.weight_bits if lp.weight is not None else None
            a_bits = _code_bits(lp.in_codebooks[0] if lp.in_codebooks else None, lp.inputs[0])
            weight_bytes = 0
            if lp.weight is not None:
                # packed indices + table with a codebook (every scheme below 8 bits), else one int8 per weight
                weight_bytes = lp.codebook.nbytes if lp.codebook is not None else lp.weight.size
                if lp.thresholds is not None:  # LUT-requantize: thresholds and, for int8 output, the levels
                    weight_bytes += lp.thresholds.nbytes + (0 if lp.out_codebook.packed else lp.out_codebook.table.size)
                if lp.thresholds is None or lp.thresholds.ndim == 1:  # per-channel thresholds hold the bias
                    weight_bytes += 4 * (lp.bias.size if lp.bias is not None else 0)
                    weight_bytes += 4 * lp.shift.size + (4 * lp.multiplier.size if lp.multiplier is not None else 0)
            rows.append({
                "name": layer.name, "op": layer.kind, "input_shapes": layer.in_shapes, "output_shape": layer.out_shape,
                "weight_bits": w_bits, "act_bits": _code_bits(lp.out_codebook, lp.output), "macs": layer.macs,
                "bops": layer.macs * (w_bits or 0) * a_bits, "weight_bytes": int(weight_bytes),
                "activation_bytes": _stored_bytes(layer.out_shape, lp.out_codebook),
            })  # fmt: skip
        return rows

    def peak_activation_bytes(self) -> int:
        """Largest sum of live activation bytes at any step of the execution order (reshapes alias their input)."""
        func = self.float_mod["main"]
        buffer_of = {func.params[0]: func.params[0]}
        size = {func.params[0]: int(np.prod(self.input_shape))}
        last_use: dict = {func.params[0]: 0}
        for step, (layer, lp) in enumerate(zip(self.layers, self.plan.layers, strict=True)):
            for var in layer.inputs:
                last_use[buffer_of[var]] = step
            if layer.kind == "reshape":
                buffer_of[layer.output] = buffer_of[layer.inputs[0]]
            else:
                buffer_of[layer.output] = layer.output
                size[layer.output] = _stored_bytes(layer.out_shape, lp.out_codebook)
                last_use[layer.output] = step
        last_use[buffer_of[func.body.body]] = len(self.layers)
        first_def = {buf: -1 for buf in size}
        for step, layer in enumerate(self.layers):
            if buffer_of[layer.output] is layer.output:
                first_def[layer.output] = step
        return max(
            sum(size[b] for b in size if first_def[b] <= step <= last_use[b]) for step in range(len(self.layers))
        )

    def summary(self) -> str:
        """A table of the layers with totals and the peak activation memory."""
        rows = self.layer_stats()
        header = (
            f"{'layer':<20}{'op':<16}{'output':<18}{'W':>3}{'A':>3}{'MACs':>10}{'BOPs':>13}{'W bytes':>9}{'A bytes':>9}"
        )
        lines = [header, "-" * len(header)]
        for r in rows:
            lines.append(
                f"{r['name']:<20}{r['op']:<16}{str(tuple(r['output_shape'])):<18}{r['weight_bits'] or '-':>3}"
                f"{r['act_bits']:>3}{r['macs']:>10}{r['bops']:>13}{r['weight_bytes']:>9}{r['activation_bytes']:>9}"
            )
        lines.append("-" * len(header))
        total = {k: sum(r[k] for r in rows) for k in ("macs", "bops", "weight_bytes")}
        lines.append(f"{'total':<57}{total['macs']:>10}{total['bops']:>13}{total['weight_bytes']:>9}")
        lines.append(f"peak activation memory: {self.peak_activation_bytes()} bytes (execution order, as stored)")
        return "\n".join(lines)


def _code_bits(cb, qp) -> int:
    """Bits per value of a tensor: its codebook's, else its uniform grid's."""
    return cb.bits if cb is not None else qp.bits


def _stored_bytes(shape, cb) -> int:
    """Bytes a tensor occupies: packed codes, or one int8 per value."""
    return int(cb.storage_bytes(tuple(shape)) if cb is not None else np.prod(shape))
