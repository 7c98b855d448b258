"""Static memory plan: every activation gets a fixed offset in one arena, decided at compile time.

Lifetimes come from the execution order (a buffer lives from the step that writes it to the last step that reads
it, through reshape aliases). Offsets are placed greedy-by-size, largest first, each at the lowest offset that
does not overlap a buffer alive at the same time, as TensorFlow Lite Micro's ``GreedyMemoryPlanner`` does.
Kernels marked ``tvmq.inplace`` (elementwise ops, a convolution with a fused residual ADD, in-place depthwise and
1x1 convolutions) write over one of their inputs when that input dies at the same step and nothing else of the
step reads it; the output takes the start of that input's buffer.
The model's input and output are the caller's buffers and take no arena space, unless ``io_in_arena``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .graph import Program, Tensor

ALIGNMENT = 16  # bytes: word loads of int8 SIMD kernels, and cache lines on Cortex-M7


def _align(n: int) -> int:
    return (n + ALIGNMENT - 1) // ALIGNMENT * ALIGNMENT


@dataclass(eq=False)
class Buffer:
    """An arena region shared by one or more tensors (in-place results), each at its own offset inside it."""

    tensors: list[Tensor]
    nbytes: int
    first: int  # step writing it
    last: int  # last step reading it
    offset: int = -1
    inner: dict[Tensor, int] = field(default_factory=dict)  # tensor -> byte offset inside the buffer (default 0)

    def add_inplace(self, out: Tensor, source: Tensor, shift: int) -> None:
        """``out`` written over ``source``, starting ``shift`` bytes before it: the buffer grows as needed."""
        start = self.inner.get(source, 0) - shift
        if start < 0:  # room in front: move everything already inside back
            self.inner = {t: self.inner.get(t, 0) - start for t in self.tensors}
            self.nbytes -= start
            start = 0
        self.tensors.append(out)
        self.inner[out] = start
        self.nbytes = max(self.nbytes, start + out.nbytes)

    def overlaps_in_time(self, other: Buffer) -> bool:
        return self.first <= other.last and other.first <= self.last


@dataclass
class MemoryPlan:
    buffers: list[Buffer]
    arena_bytes: int
    lower_bound_bytes: int  # max over steps of the bytes alive at that step: no plan can use less
    location: dict[Tensor, tuple[str, int]]  # tensor -> ("arena", offset) | ("input", 0) | ("output", 0) | ("const", 0)

    @property
    def ratio(self) -> float:
        return self.arena_bytes / self.lower_bound_bytes if self.lower_bound_bytes else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "arena_bytes": self.arena_bytes,
            "lower_bound_bytes": self.lower_bound_bytes,
            "arena_to_lower_bound": round(self.ratio, 4),
            "alignment": ALIGNMENT,
            "buffers": [
                {"tensors": [t.name for t in b.tensors], "bytes": b.nbytes, "offset": b.offset,
                 "first_step": b.first, "last_step": b.last}
                for b in sorted(self.buffers, key=lambda b: b.offset)
            ],
        }  # fmt: skip


def plan_memory(program: Program, *, io_in_arena: bool = False) -> MemoryPlan:
    """Lifetimes from the step order, in-place merges, then greedy-by-size offsets.

    ``io_in_arena``: the model's input and output get arena buffers too (as in TensorFlow Lite Micro, whose arena
    holds them): the input alive from the start to its last reader, the output from its writer to the end.
    """
    output_storage = program.storage(program.output)
    buffer_of: dict[Tensor, Buffer] = {}
    buffers: list[Buffer] = []
    last_step = len(program.steps) - 1
    if io_in_arena:
        buffers.append(Buffer([program.input], program.input.nbytes, 0, 0))
        buffer_of[program.input] = buffers[-1]
    for index, step in enumerate(program.steps):
        for t in step.inputs:
            owner = buffer_of.get(program.storage(t))
            if owner is not None:
                owner.last = max(owner.last, index)
        out = program.storage(step.output)
        if out is output_storage and not io_in_arena:
            continue
        if out in buffer_of:  # another slice of a concatenation whose buffer exists already
            continue
        shared = _inplace_buffer(program, step, index, buffer_of, output_storage) if out is step.output else None
        if shared is not None:
            buf, source = shared
            buf.add_inplace(out, source, int(step.attrs.get("tvmq.inplace_shift", 0)))
            buffer_of[out] = buf
            continue
        buf = Buffer([out], out.nbytes, index, index)
        buffers.append(buf)
        buffer_of[out] = buf
    if io_in_arena and output_storage in buffer_of:  # read by the caller after the last step
        buffer_of[output_storage].last = last_step
    _place_greedy_by_size(buffers)
    location: dict[Tensor, tuple[str, int]] = {}
    for t in {program.storage(x) for s in program.steps for x in (*s.inputs, s.output)} | {program.input}:
        if t in buffer_of:
            location[t] = ("arena", buffer_of[t].offset + buffer_of[t].inner.get(t, 0))
        elif t.kind in ("input", "const"):
            location[t] = (t.kind, 0)
        else:
            location[t] = ("output", 0)
    arena = max((b.offset + _align(b.nbytes) for b in buffers), default=0)
    return MemoryPlan(buffers, arena, _lower_bound(buffers, len(program.steps)), location)


def _inplace_buffer(
    program: Program, step, index: int, buffer_of: dict, output_storage: Tensor
) -> tuple[Buffer, Tensor] | None:
    """The buffer (and input tensor) this step may overwrite: marked in-place-safe, read by no later step and by
    no other input of this step (a convolution reading its residual as its data, say)."""
    allowed = step.attrs.get("tvmq.inplace")
    if allowed is None:
        return None
    for k in allowed:
        source = program.storage(step.inputs[int(k)])
        buf = buffer_of.get(source)
        if buf is None or source is output_storage:
            continue
        if any(program.storage(t) is source for j, t in enumerate(step.inputs) if j != int(k)):
            continue
        later_readers = (
            any(program.storage(t) is source for s in program.steps[index + 1 :] for t in s.inputs)
            or program.storage(program.output) is source
        )
        if not later_readers:
            return buf, source
    return None


def _place_greedy_by_size(buffers: list[Buffer]) -> None:
    placed: list[Buffer] = []
    for buf in sorted(buffers, key=lambda b: (-b.nbytes, b.first)):
        offset = 0
        for other in sorted((p for p in placed if p.overlaps_in_time(buf)), key=lambda p: p.offset):
            if offset + buf.nbytes <= other.offset:
                break
            offset = max(offset, other.offset + _align(other.nbytes))
        buf.offset = offset
        placed.append(buf)


def _lower_bound(buffers: list[Buffer], num_steps: int) -> int:
    return max((sum(b.nbytes for b in buffers if b.first <= s <= b.last) for s in range(num_steps)), default=0)
