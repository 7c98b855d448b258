"""Concatenations without a copy: each producer writes straight into its slice of the concatenated tensor.

A concat kernel needs its inputs and its output alive together, twice the bytes of the result. When every input
of a concat is written by its own step and read by nothing else, those steps can write into the concatenation's
buffer directly, with the concatenation's strides (``Step.out_strides``; ``kernels.strided_output`` rewrites the
kernel's output layout), and the concat step disappears. Only addresses change: the host reference keeps the
copy, and the device's bytes are the same.
"""

from __future__ import annotations

import math
from dataclasses import replace

from .graph import Program, Step, Tensor


def write_concat_slices(program: Program) -> Program:
    """``program`` with every eligible concat step replaced by its producers writing into its output."""
    steps = list(program.steps)
    slices = dict(program.slices)
    kernels = dict(program.kernels)
    for concat in [s for s in steps if str(s.attrs.get("tvmq.op", "")) == "concat"]:
        producers = _slice_producers(program, steps, concat)
        axis = _concat_axis(concat)
        if producers is None or axis is None:
            continue
        strides = _row_major_strides(concat.output.shape)
        offset = 0
        for t, producer in zip(concat.inputs, producers, strict=True):
            slices[t] = (concat.output, offset * strides[axis] * _itemsize(t))
            offset += t.shape[axis]
            kernel = f"{producer.kernel}__into_{concat.name}"
            kernels[kernel] = program.kernels[producer.kernel]
            attrs = {**producer.attrs, "tvmq.inplace": []}  # its output is no longer its own buffer
            steps[steps.index(producer)] = replace(producer, kernel=kernel, attrs=attrs, out_strides=strides)
        steps.remove(concat)
    used = {s.kernel for s in steps}
    kernels = {k: f for k, f in kernels.items() if k in used}
    return replace(program, steps=steps, slices=slices, kernels=kernels)


def _slice_producers(program: Program, steps: list[Step], concat: Step) -> list[Step] | None:
    """The step writing each input, when each input is a plain activation written by its own step and read only
    by the concat; else None."""
    writers = {s.output: s for s in steps}
    producers = []
    output_storage = program.storage(program.output)
    for t in concat.inputs:
        writer = writers.get(t)
        if writer is None or t.kind != "activation" or t in program.slices or program.storage(t) is not t:
            return None
        if t is output_storage or any(t in s.inputs for s in steps if s is not concat) or writer in producers:
            return None
        if any(program.storage(u) is t for u in program.aliases):  # read through a reshape elsewhere
            return None
        producers.append(writer)
    return producers if len(producers) > 1 else None


def _concat_axis(concat: Step) -> int | None:
    """The axis along which the inputs' shapes add up to the output's (the others equal), or None."""
    out = concat.output.shape
    for axis in range(len(out)):
        others_equal = all(
            len(t.shape) == len(out) and all(t.shape[d] == out[d] for d in range(len(out)) if d != axis)
            for t in concat.inputs
        )
        if others_equal and sum(t.shape[axis] for t in concat.inputs) == out[axis]:
            return axis
    return None


def _row_major_strides(shape: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(math.prod(shape[d + 1 :]) for d in range(len(shape)))


def _itemsize(t: Tensor) -> int:
    return t.nbytes // max(math.prod(t.shape), 1)
