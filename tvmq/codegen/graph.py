"""Read the integer Relax ``main`` as a flat program: kernel calls on tensors, in execution order.

``RealizeIntegerOps`` leaves three kinds of bindings in ``main``: ``R.call_tir`` of a quantized PrimFunc,
``R.reshape`` (same bytes, new shape) and plain variable aliases. Everything the C generator and the memory
planner need (which tensors exist, which are constants, who reads and writes what, in which order) is here.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import tvm
from tvm import relax

from ..relay_passes._util import const_array, is_op


@dataclass(eq=False)
class Tensor:
    """A value of the program: the model input, a constant (weights, tables) or an intermediate activation."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str  # "input" | "const" | "activation"
    value: np.ndarray | None = None  # constants only

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


@dataclass(eq=False)
class Step:
    """One kernel call: ``kernel(*inputs, output)``."""

    name: str  # the layer name, e.g. "conv2d_0"
    kernel: str  # the PrimFunc's name in the module
    inputs: list[Tensor]
    output: Tensor
    attrs: dict = field(default_factory=dict)  # the PrimFunc's "tvmq.*" attributes (op, macs, inplace)
    out_strides: tuple[int, ...] | None = None  # writes a slice of a larger tensor: its row-major strides (elements)


@dataclass
class Program:
    input: Tensor
    output: Tensor  # may be an alias of an activation or of the input
    steps: list[Step]
    aliases: dict[Tensor, Tensor]  # reshaped view -> the tensor that owns the bytes
    kernels: dict[str, tvm.tirx.PrimFunc]
    slices: dict[Tensor, tuple[Tensor, int]] = field(default_factory=dict)  # part -> (whole, byte offset)

    def storage(self, t: Tensor) -> Tensor:
        """The tensor owning ``t``'s bytes (follows reshape/alias chains and slices)."""
        return self._resolve(t)[0]

    def byte_offset(self, t: Tensor) -> int:
        """Where ``t`` starts inside ``storage(t)``: non-zero for a slice written straight into a concatenation."""
        return self._resolve(t)[1]

    def _resolve(self, t: Tensor) -> tuple[Tensor, int]:
        offset = 0
        while t in self.aliases or t in self.slices:
            if t in self.aliases:
                t = self.aliases[t]
            else:
                t, part = self.slices[t]
                offset += part
        return t, offset


def _shape_dtype(ty) -> tuple[tuple[int, ...], str]:
    return tuple(int(d) for d in ty.shape), str(ty.dtype)


def read_program(mod: tvm.IRModule, function: str = "main") -> Program:
    """Flatten ``mod[function]`` (call_tir/reshape/alias bindings) into a ``Program``."""
    func = mod[function]
    param = func.params[0]
    tensors: dict[relax.Var, Tensor] = {param: Tensor("input", *_shape_dtype(param.ty), "input")}
    consts: list[Tensor] = []
    steps: list[Step] = []
    aliases: dict[Tensor, Tensor] = {}
    kernels: dict[str, tvm.tirx.PrimFunc] = {}
    uses: Counter[str] = Counter()

    def operand(expr: relax.Expr, owner: str, index: int) -> Tensor:
        value = const_array(expr)
        if value is not None:
            t = Tensor(f"{owner}_c{index}", tuple(value.shape), str(value.dtype), "const", value)
            consts.append(t)
            return t
        return tensors[expr]

    for block in func.body.blocks:
        for binding in block.bindings:
            var, value = binding.var, binding.value
            if isinstance(value, relax.Var):
                tensors[var] = tensors[value]
                continue
            if is_op(value, "relax.call_tir"):
                gv, args = value.args[0], value.args[1]
                prim = mod[gv]
                kernel = gv.name_hint
                kernels[kernel] = prim
                # identical PrimFuncs share one GlobalVar (and one C kernel); each call is still its own step
                uses[kernel] += 1
                name = kernel if uses[kernel] == 1 else f"{kernel}_{uses[kernel] - 1}"
                inputs = [operand(a, name, i) for i, a in enumerate(args.fields)]
                out = Tensor(name, *_shape_dtype(var.ty), "activation")
                attrs = {str(k): v for k, v in dict(prim.attrs or {}).items() if str(k).startswith("tvmq.")}
                steps.append(Step(name, kernel, inputs, out, attrs))
                tensors[var] = out
            elif is_op(value, "relax.reshape"):
                view = Tensor(var.name, *_shape_dtype(var.ty), "activation")
                aliases[view] = tensors[value.args[0]]
                tensors[var] = view
            else:
                what = value.op.name if isinstance(value, relax.Call) else type(value).__name__
                raise AssertionError(f"binding {var.name} = {what} has no C lowering")  # RealizeIntegerOps emits none
    return Program(tensors[param], tensors[func.body.body], steps, aliases, kernels)
