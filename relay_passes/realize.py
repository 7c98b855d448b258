"""Realise the quantization plan: float layers -> ``R.call_tir`` of integer PrimFuncs from ``tvmq.schedules``.

The result has three functions: ``main`` (int8 in -> int8 out, integer-only), ``quantize_input`` (float -> int8,
``nl_quantize`` with an input codebook) and ``dequantize_output`` (int8 -> float). Tensors with an activation
codebook travel between layers as packed b-bit codes (uint8): conv/dense decode them through the table and
produce them by LUT-requantize; max pool, reshape and transpose move codes; any other op reads them decoded.
The PrimFuncs are the single definition of tvmq's integer arithmetic:
the host (LLVM) and the device (C) both build from them.
"""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax

from .. import schedules as S
from ..quant.codebooks import nl_quantize_thresholds
from ..quant.fixed_point import mean_multiplier
from ..quant.plan import ActCodebook, LayerPlan, QuantPlan
from .inplace import InplacePlan
from .layers import WEIGHTED_KINDS, Layer


def RealizeIntegerOps(layers: list[Layer], plan: QuantPlan) -> tvm.transform.Pass:  # noqa: N802
    """A module pass replacing the float ``main`` with its integer-only counterpart."""

    @tvm.transform.module_pass(opt_level=0, name="tvmq.RealizeIntegerOps")
    def _realize(mod: tvm.IRModule, ctx) -> tvm.IRModule:
        return _Realizer(mod["main"], layers, plan).build()

    return _realize


class _Realizer:
    def __init__(self, func: relax.Function, layers: list[Layer], plan: QuantPlan) -> None:
        self.func, self.layers, self.plan = func, layers, plan
        self.bb = relax.BlockBuilder()

    def build(self) -> tvm.IRModule:
        param = self.func.params[0]
        in_shape = _shape(param)
        x = relax.Var("input_q", relax.TensorType(in_shape, "int8"))
        self.inplace = InplacePlan(self.layers, self.plan, param, self.func.body.body)
        with self.bb.function("main", [x]):
            with self.bb.dataflow():
                self.env = env = {param: x}
                for layer, lp in zip(self.layers, self.plan.layers, strict=True):
                    if layer.name in self.inplace.absorbed:
                        continue  # computed by the convolution that absorbed it (below)
                    inputs = [env[v] for v in layer.inputs]
                    env[layer.output] = self._emit_layer(layer, lp, inputs)
                    fusion = self.inplace.fusions.get(layer.name)
                    if fusion is not None:
                        env[fusion.add.output] = env[layer.output]
                out = self.bb.emit_output(env[self.func.body.body])
            self.bb.emit_func_output(out)
        self._boundary_functions(in_shape, _shape(self.func.body.body))
        return self.bb.finalize()

    # -- helpers ---------------------------------------------------------------------------------------------
    def _call(
        self,
        name: str,
        prim: tvm.tirx.PrimFunc,
        args: list,
        out_shape,
        dtype: str = "int8",
        *,
        op: str | None = None,
        macs: int = 0,
        inplace: tuple[int, ...] = (),
        inplace_shift: int = 0,
    ) -> relax.Var:
        """Emit ``call_tir``; the PrimFunc carries what code generation needs to know about the step:
        ``tvmq.op``, ``tvmq.macs``, ``tvmq.inplace`` (inputs the output may overwrite) and ``tvmq.inplace_shift``
        (bytes by which the output must then start before that input)."""
        prim = prim.with_attrs({"tvmq.op": op or name, "tvmq.macs": int(macs), "tvmq.inplace": list(inplace),
                                "tvmq.inplace_shift": int(inplace_shift)})  # fmt: skip
        gv = self.bb.add_func(prim, name)
        return self.bb.emit(relax.call_tir(gv, args, relax.TensorType(list(out_shape), dtype)), name)

    def _layer_call(self, layer: Layer, prim: tvm.tirx.PrimFunc, args: list, out_shape=None, dtype: str = "int8",
                    *, inplace: tuple[int, ...] = (), inplace_shift: int = 0) -> relax.Var:  # fmt: skip
        out_shape = layer.out_shape if out_shape is None else out_shape
        return self._call(layer.name, prim, args, out_shape, dtype, op=layer.kind, macs=layer.macs, inplace=inplace,
                          inplace_shift=inplace_shift)  # fmt: skip

    def _transpose(self, x: relax.Expr, axes: list[int], name: str, codes: ActCodebook | None = None,
                   shape=None) -> relax.Expr:  # fmt: skip
        """A transpose that only moves size-1 axes keeps the byte order: emit it as a reshape (free). With
        ``codes``, ``x`` holds packed codes of that codebook and ``shape`` is its logical shape."""
        shape = [int(d) for d in (x.ty.shape if shape is None else shape)]
        out_shape = [shape[a] for a in axes]
        moved = [a for a in axes if shape[a] != 1]
        if moved == sorted(moved):
            return self._reshape(x, _storage_shape(out_shape, codes))
        prim = S.qtranspose_primfunc(shape, axes=axes, code_bits=None if codes is None else codes.bits)
        return self._call(name, prim, [x], _storage_shape(out_shape, codes), "int8" if codes is None else "uint8",
                          op="transpose")  # fmt: skip

    def _reshape(self, x: relax.Expr, shape) -> relax.Var:
        return self.bb.emit(relax.op.reshape(x, list(shape)))

    def _boundary_functions(self, in_shape, out_shape) -> None:
        qin, qout = self.plan.input, self.plan.output
        xf = relax.Var("x", relax.TensorType(list(in_shape), "float32"))
        with self.bb.function("quantize_input", [xf]):
            cb = self.plan.input_codebook
            if cb is None:
                prim = S.quantize_primfunc(in_shape, scale=qin.scale, zero_point=qin.zero_point, qmin=qin.qmin,
                                           qmax=qin.qmax)  # fmt: skip
                self.bb.emit_func_output(self._call("quantize", prim, [xf], in_shape))
            else:  # nl_quantize: the nearest level of the input's codebook, written as its int8 value
                thresholds = nl_quantize_thresholds(qin.dequantize(cb.levels).astype(np.float64), cb.bits)
                prim = S.nl_quantize_primfunc(in_shape, bits=cb.bits)
                args = [xf, relax.const(thresholds), relax.const(cb.table)]
                self.bb.emit_func_output(self._call("nl_quantize", prim, args, in_shape))
        yq = relax.Var("y", relax.TensorType(list(out_shape), "int8"))
        with self.bb.function("dequantize_output", [yq]):
            prim = S.dequantize_primfunc(out_shape, scale=qout.scale, zero_point=qout.zero_point)
            self.bb.emit_func_output(self._call("dequantize", prim, [yq], out_shape, "float32"))

    # -- layers ----------------------------------------------------------------------------------------------
    def _emit_layer(self, layer: Layer, lp: LayerPlan, inputs: list[relax.Expr]) -> relax.Expr:
        kind = layer.kind
        reads_codes = kind in WEIGHTED_KINDS or _packed(lp.out_codebook) is not None
        if not reads_codes:
            inputs = self._decoded(layer, lp, inputs)
        if kind in ("conv2d", "conv1d"):
            return self._conv(layer, lp, inputs[0])
        if kind == "dense":
            return self._weighted(layer, lp, inputs[0], S.qdense_primfunc(
                layer.in_shapes[0], lp.weight.shape, has_bias=lp.bias is not None, input_zp=lp.inputs[0].zero_point,
                output_zp=lp.output.zero_point, act_min=lp.act_min, act_max=lp.act_max, pow2=lp.multiplier is None,
                **self._codebook_args(lp),
            ), lp.weight, layer.out_shape)  # fmt: skip
        if kind == "add":
            a, b = lp.inputs
            prim = S.qadd_primfunc(layer.in_shapes[0], layer.in_shapes[1], a_zp=a.zero_point, b_zp=b.zero_point,
                                   out_zp=lp.output.zero_point, act_min=lp.act_min, act_max=lp.act_max,
                                   **lp.params)  # fmt: skip
            same = tuple(k for k, shape in enumerate(layer.in_shapes) if tuple(shape) == tuple(layer.out_shape))
            return self._layer_call(layer, prim, inputs, inplace=same)
        if kind in ("max_pool2d", "max_pool1d", "avg_pool2d", "avg_pool1d"):
            return self._pool(layer, lp, inputs[0])
        if kind == "global_avg_pool":
            return self._global_avg_pool(layer, lp, inputs[0])
        if kind == "concat":
            return self._concat(layer, lp, inputs)
        if kind == "pad":
            width = layer.attrs["pad_width"]
            prim = S.qpad_primfunc(layer.in_shapes[0], pad_before=width[0::2], pad_after=width[1::2],
                                   pad_value=lp.params["pad_code"])  # fmt: skip
            return self._layer_call(layer, prim, inputs)
        if kind == "softmax":
            prim = S.qsoftmax_tflm_primfunc(layer.in_shapes[0])
            args = [inputs[0], relax.const(lp.params["exp"]), relax.const(lp.params["sums"])]
            return self._layer_call(layer, prim, args)
        if kind == "sigmoid":
            prim = S.qlut_primfunc(layer.in_shapes[0])
            return self._layer_call(layer, prim, [inputs[0], relax.const(lp.params["table"])], inplace=(0,))
        if kind == "clamp":
            prim = S.qclamp_primfunc(layer.in_shapes[0], lo=lp.act_min, hi=lp.act_max)
            return self._layer_call(layer, prim, inputs, inplace=(0,))
        if kind == "requantize":  # a clamp onto another grid (pre-quantized models' standalone RELU)
            prim = S.qrequantize_primfunc(layer.in_shapes[0], in_zp=lp.inputs[0].zero_point,
                                          out_zp=lp.output.zero_point, act_min=lp.act_min, act_max=lp.act_max,
                                          **lp.params)  # fmt: skip
            return self._layer_call(layer, prim, inputs, inplace=(0,))
        if kind == "reshape":
            return self._reshape(inputs[0], _storage_shape(layer.out_shape, lp.out_codebook))
        if kind == "transpose":
            return self._transpose(inputs[0], list(layer.attrs["axes"]), layer.name, _packed(lp.out_codebook),
                                   layer.in_shapes[0])  # fmt: skip
        raise AssertionError(f"layer kind {kind} has no realisation")  # find_layers only yields the kinds above

    def _decoded(self, layer: Layer, lp: LayerPlan, inputs: list[relax.Expr]) -> list[relax.Expr]:
        """Inputs stored as packed codes, decoded to int8 for an op that reads int8 (exact: same grid)."""
        out = []
        for k, (x, cb, shape) in enumerate(zip(inputs, lp.in_codebooks, layer.in_shapes, strict=True)):
            if _packed(cb) is not None:
                prim = S.qdecode_primfunc(shape, bits=cb.bits)
                x = self._call(f"{layer.name}_decode{k}", prim, [x, relax.const(cb.table)], shape, op="decode")
            out.append(x)
        return out

    def _weighted(self, layer: Layer, lp: LayerPlan, data, prim, weight: np.ndarray, out_shape, *,
                  residual: relax.Expr | None = None, inplace_shift: int | None = None) -> relax.Var:  # fmt: skip
        """Args in the order of ``S.qconv2d_primfunc``/``S.qdense_primfunc``: data (+ its table when it is packed
        codes), weight (or packed indices + table), then the multiply-shift or LUT-requantize epilogue, then the
        residual of a fused ADD (which the output may overwrite). ``inplace_shift``: an in-place convolution, whose
        output may overwrite the data when it starts that many bytes before it."""
        args = [data]
        in_cb = _packed(lp.in_codebooks[0])
        if in_cb is not None:
            args.append(relax.const(in_cb.table))
        if lp.codebook is None:
            args.append(relax.const(weight))
        else:  # packed indices (in the layout of ``weight``, e.g. conv1d's extra axis) and the int8 table
            indices = lp.codebook.indices.reshape(weight.shape)
            args += [relax.const(S.pack_rows(indices, lp.codebook.bits)), relax.const(lp.codebook.table)]
        if lp.thresholds is None or lp.thresholds.ndim == 1:  # multiply-shift (also before shared thresholds)
            if lp.bias is not None:
                args.append(relax.const(lp.bias))
            if lp.multiplier is not None:
                args.append(relax.const(lp.multiplier))
            args.append(relax.const(lp.shift))
        if lp.thresholds is not None:
            args.append(relax.const(lp.thresholds))
            if not lp.out_codebook.packed:
                args.append(relax.const(lp.out_codebook.table))
        if residual is not None:
            args.append(residual)
            return self._call(layer.name, prim, args, out_shape, op=f"{layer.kind}+add", macs=layer.macs,
                              inplace=(len(args) - 1,))  # fmt: skip
        out_cb = _packed(lp.out_codebook)
        dtype = "int8" if out_cb is None else "uint8"
        inplace = () if inplace_shift is None else (0,)
        return self._layer_call(layer, prim, args, _storage_shape(out_shape, out_cb), dtype, inplace=inplace,
                                inplace_shift=inplace_shift or 0)  # fmt: skip

    def _codebook_args(self, lp: LayerPlan) -> dict:
        """Keyword arguments of the weighted PrimFunc builders for codes in, codebook weights and LUT out."""
        in_cb, out_cb = _packed(lp.in_codebooks[0]), lp.out_codebook
        return {
            "codebook_bits": None if lp.codebook is None else lp.codebook.bits,
            "input_code_bits": None if in_cb is None else in_cb.bits,
            "lut_bits": None if lp.thresholds is None else out_cb.bits,
            "lut_levels": lp.thresholds is not None and not out_cb.packed,
            "lut_shared": lp.thresholds is not None and lp.thresholds.ndim == 1,
        }

    def _conv(self, layer: Layer, lp: LayerPlan, data) -> relax.Expr:
        a = layer.attrs
        in_shape, weight = layer.in_shapes[0], lp.weight
        strides, padding, dilation = a["strides"], a["padding"], a["dilation"]
        out_shape = layer.out_shape
        if layer.kind == "conv1d":  # (N, W, C) as (N, 1, W, C): one kernel definition serves both
            in_shape = (in_shape[0], 1, *in_shape[1:])
            data = self._reshape(data, _storage_shape(in_shape, lp.in_codebooks[0]))
            weight = weight.reshape(weight.shape[0], 1, *weight.shape[1:])
            strides, dilation = [1, strides[0]], [1, dilation[0]]
            padding = [0, padding[0], 0, padding[1]]
            out_shape = (out_shape[0], 1, *out_shape[1:])
        fusion = self.inplace.fusions.get(layer.name)
        mode = self.inplace.conv_mode(layer, lp)
        prim = S.qconv2d_primfunc(
            in_shape, weight.shape, has_bias=lp.bias is not None, strides=strides, padding=padding,
            dilation=dilation, groups=a["groups"], input_zp=lp.inputs[0].zero_point, output_zp=lp.output.zero_point,
            act_min=lp.act_min, act_max=lp.act_max, pow2=lp.multiplier is None, **self._codebook_args(lp),
            inplace=mode, residual=None if fusion is None else _residual_args(fusion),
        )  # fmt: skip
        residual = None
        if fusion is not None:
            residual = self.env[fusion.residual]
            if layer.kind == "conv1d":
                residual = self._reshape(residual, out_shape)
        shift = None if mode is None else S.inplace_shift(mode, in_shape, out_shape, strides)
        out = self._weighted(layer, lp, data, prim, weight, out_shape, residual=residual, inplace_shift=shift)
        return self._reshape(out, _storage_shape(layer.out_shape, lp.out_codebook)) if layer.kind == "conv1d" else out

    def _pool(self, layer: Layer, lp: LayerPlan, data) -> relax.Expr:
        a = layer.attrs
        in_shape, out_shape = layer.in_shapes[0], layer.out_shape
        pool, strides, padding = list(a["pool_size"]), list(a["strides"]), list(a["padding"])
        one_d = layer.kind.endswith("1d")
        codes = _packed(lp.out_codebook)  # a max pool working on the codes themselves
        if one_d:
            in_shape, out_shape = (in_shape[0], 1, *in_shape[1:]), (out_shape[0], 1, *out_shape[1:])
            data = self._reshape(data, _storage_shape(in_shape, codes))
            pool, strides, padding = [1, pool[0]], [1, strides[0]], [0, padding[0], 0, padding[1]]
        kw = {"pool": pool, "strides": strides, "padding": padding, "ceil_mode": a["ceil_mode"],
              "act_min": lp.act_min, "act_max": lp.act_max}  # fmt: skip
        if layer.kind.startswith("max"):
            prim = S.qmax_pool2d_primfunc(in_shape, code_bits=None if codes is None else codes.bits, **kw)
        else:  # padded taps that count are real 0, i.e. the input zero point
            prim = S.qavg_pool2d_primfunc(in_shape, count_include_pad=a["count_include_pad"],
                                          pad_value=lp.inputs[0].zero_point, **kw)  # fmt: skip
        kernel_shape = [int(d) for d in prim.params[-1].ty.shape]
        out_shape = _storage_shape(out_shape, codes)
        if kernel_shape != [int(d) for d in out_shape]:  # S.pool_out_size rounds ceil_mode as TVM does
            raise AssertionError(f"{layer.name}: pool kernel output {kernel_shape} != graph shape {list(out_shape)}")
        out = self._layer_call(layer, prim, [data], out_shape, "int8" if codes is None else "uint8")
        return self._reshape(out, _storage_shape(layer.out_shape, codes)) if one_d else out

    def _global_avg_pool(self, layer: Layer, lp: LayerPlan, data) -> relax.Expr:
        shape = layer.in_shapes[0]
        if not layer.attrs["channels_last"]:
            axes = [0, *range(2, len(shape)), 1]
            data = self._transpose(data, axes, f"{layer.name}_to_nhwc")
            shape = tuple(shape[i] for i in axes)
        nhwc = shape if len(shape) == 4 else (shape[0], 1, shape[1], shape[2])
        if nhwc != shape:
            data = self._reshape(data, nhwc)
        if lp.output != lp.inputs[0]:  # a pre-quantized model's MEAN onto another grid: TFLM's arithmetic
            mult, shift = lp.params.get("mean") or mean_multiplier(
                lp.inputs[0].scale / lp.output.scale, nhwc[1] * nhwc[2]
            )
            prim = S.qmean_primfunc(nhwc, mult=mult, shift=shift, in_zp=lp.inputs[0].zero_point,
                                    out_zp=lp.output.zero_point)  # fmt: skip
        else:
            prim = S.qavg_pool2d_primfunc(nhwc, pool=nhwc[1:3], strides=(1, 1), act_min=lp.act_min,
                                          act_max=lp.act_max)  # fmt: skip
        out = self._layer_call(layer, prim, [data], (nhwc[0], 1, 1, nhwc[3]))
        return self._reshape(out, layer.out_shape)

    def _concat(self, layer: Layer, lp: LayerPlan, inputs: list) -> relax.Expr:
        parts = []
        for k, (x, qp, rescale) in enumerate(zip(inputs, lp.inputs, lp.params["rescale"], strict=True)):
            if rescale is not None:
                prim = S.qrequantize_primfunc(layer.in_shapes[k], in_zp=qp.zero_point, mult=rescale[0],
                                              shift=rescale[1], out_zp=lp.output.zero_point,
                                              act_min=lp.output.qmin, act_max=lp.output.qmax)  # fmt: skip
                x = self._call(f"{layer.name}_rescale{k}", prim, [x], layer.in_shapes[k], op="requantize",
                               inplace=(0,))  # fmt: skip
            parts.append(x)
        prim = S.qconcat_primfunc(layer.in_shapes, axis=layer.attrs["axis"])
        return self._layer_call(layer, prim, parts)


def _residual_args(fusion) -> dict:
    """``S.qconv2d_primfunc``'s ``residual``: the absorbed ADD's TFLite arithmetic (``qadd_primfunc``'s keywords)."""
    ap = fusion.add_plan
    a, b = ap.inputs
    return {"a_zp": a.zero_point, "b_zp": b.zero_point, "out_zp": ap.output.zero_point, "act_min": ap.act_min,
            "act_max": ap.act_max, "conv_first": fusion.conv_first, **ap.params}  # fmt: skip


def _shape(expr: relax.Expr) -> tuple[int, ...]:
    return tuple(int(d) for d in expr.ty.shape)


def _packed(cb: ActCodebook | None) -> ActCodebook | None:
    """The codebook of a tensor stored as packed codes, or None (int8 storage, levels or uniform)."""
    return cb if cb is not None and cb.packed else None


def _storage_shape(shape, cb: ActCodebook | None) -> tuple[int, ...]:
    """Shape of a tensor as stored: packed codes along the last axis, or one int8 per value."""
    return S.packed_shape(shape, cb.bits) if _packed(cb) is not None else tuple(int(d) for d in shape)
