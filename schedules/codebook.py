"""Weights stored as packed b-bit indices into a per-output-channel int8 table, decoded inside the kernels.

Row ``o`` of ``packed`` holds the indices of output channel ``o`` in row-major order of the remaining axes, each
in ``slot`` bits (1, 2, 4 or 8), low bits first: index ``r`` sits in byte ``r // (8 // slot)`` at bit
``(r % (8 // slot)) * slot``. ``table[o, i]`` is the int8 weight value of index ``i`` on channel ``o``'s grid, so a
decoded weight is an ordinary int8 weight: the arithmetic after decoding is exactly the int8 kernel's.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from tvm import te, tirx

from .fixed_point import as_expr, i32, let, requantize

SLOT_BITS = (1, 2, 4, 8)


def slot_bits(bits: int) -> int:
    """Bits one index occupies in storage: the smallest of 1, 2, 4, 8 that holds ``bits``."""
    if not 1 <= bits <= 8:
        raise ValueError(f"codebook index bits must be 1..8, got {bits}")
    return next(s for s in SLOT_BITS if s >= bits)


def packed_row_bytes(row_length: int, bits: int) -> int:
    """Bytes of one packed row of ``row_length`` indices."""
    return math.ceil(row_length * slot_bits(bits) / 8)


def decode_weight(
    packed: te.Tensor, table: te.Tensor, shape: Sequence[int], bits: int, *, name: str = "weight_decode"
) -> te.Tensor:
    """int8 weights of ``shape`` (O, ...): ``table[o, index(o, ...)]`` with the index unpacked from ``packed``."""
    shape = tuple(int(d) for d in shape)
    row = math.prod(shape[1:])
    if tuple(int(d) for d in packed.shape) != (shape[0], packed_row_bytes(row, bits)):
        raise ValueError(f"{name}: packed shape {tuple(packed.shape)} does not hold {shape} at {bits} bits")
    if int(table.shape[0]) != shape[0] or int(table.shape[1]) < 2**bits:
        raise ValueError(f"{name}: table shape {tuple(table.shape)} does not fit {shape[0]} channels x 2^{bits}")

    def f(o: tirx.Var, *rest: tirx.Var) -> tirx.PrimExpr:
        r = tirx.const(0, "int32")
        for extent, idx in zip(shape[1:], rest, strict=True):
            r = r * extent + idx
        return table[o, packed_index(lambda byte: packed[o, byte], r, bits)]

    return te.compute(shape, f, name=name)


def packed_index(load: Callable[[tirx.PrimExpr], tirx.PrimExpr], r: tirx.PrimExpr, bits: int) -> tirx.PrimExpr:
    """int32 index number ``r`` of a packed row, ``load(byte)`` reading the row's bytes (``pack_rows``' layout).

    One definition for ``decode_weight`` and for the description of the micro-kernel that decodes as it goes."""
    slot = slot_bits(bits)
    if slot == 8:
        return i32(load(r))
    per_byte = 8 // slot
    byte = i32(load(tirx.floordiv(r, per_byte)))
    return tirx.bitwise_and(tirx.shift_right(byte, tirx.floormod(r, per_byte) * slot), (1 << slot) - 1)


def pack_rows(indices: np.ndarray, bits: int) -> np.ndarray:
    """The ``packed`` operand of ``decode_weight``: (O, ...) indices < 2^bits -> uint8 (O, packed_row_bytes)."""
    indices = np.asarray(indices)
    if indices.size and (indices.min() < 0 or indices.max() >= 2**bits):
        raise ValueError(f"indices must lie in [0, {2**bits}) for {bits}-bit codebooks")
    slot = slot_bits(bits)
    per_byte = 8 // slot
    rows = indices.reshape(indices.shape[0], -1).astype(np.uint8)
    row_bytes = packed_row_bytes(rows.shape[1], bits)
    padded = np.zeros((rows.shape[0], row_bytes * per_byte), np.uint8)
    padded[:, : rows.shape[1]] = rows
    slots = padded.reshape(rows.shape[0], row_bytes, per_byte).astype(np.uint16)
    shifts = (np.arange(per_byte, dtype=np.uint16) * slot)[None, None, :]
    return np.bitwise_or.reduce(slots << shifts, axis=2).astype(np.uint8)


def unpack_rows(packed: np.ndarray, bits: int, row_length: int) -> np.ndarray:
    """The inverse of ``pack_rows`` (and of activation packing along the last axis): (..., bytes) -> (..., n)."""
    packed = np.asarray(packed, np.uint8)
    slot = slot_bits(bits)
    if packed.shape[-1] != packed_row_bytes(row_length, bits):
        raise ValueError(f"{packed.shape[-1]} bytes per row do not hold {row_length} indices of {bits} bits")
    shifts = np.arange(8 // slot, dtype=np.uint8) * slot
    slots = (packed[..., None] >> shifts) & ((1 << slot) - 1)
    return slots.reshape(*packed.shape[:-1], -1)[..., :row_length]


# ------------------------------------------------------------------------------------------------ activations
# An activation with a codebook is stored as its b-bit codes, packed along the last (channel) axis in the layout
# of ``pack_rows``: value (..., c) sits in byte (..., c // per_byte) at bit (c % per_byte) * slot. Code i stands
# for the int8 value ``table[i]`` on the tensor's own int8 grid, so a decoded activation is an ordinary int8 one.

ACT_DECODE = "act_decode"  # block name of decoding packed codes (the default schedule decodes conv inputs by rows)
ACT_PACK = "act_pack"  # block name of the packing stage (the default schedule computes its producer inside it)


def packable(channels: int, bits: int) -> bool:
    """Whether codes of a tensor with ``channels`` in its last axis pack without straddling rows (and save space)."""
    slot = slot_bits(bits)
    return slot < 8 and channels % (8 // slot) == 0


def packed_shape(shape: Sequence[int], bits: int) -> tuple[int, ...]:
    """Storage shape of a packed activation of logical ``shape``."""
    *outer, channels = (int(d) for d in shape)
    if not packable(channels, bits):
        raise ValueError(f"{channels} channels of {bits}-bit codes do not pack into whole bytes")
    return (*outer, packed_row_bytes(channels, bits))


def _code_at(packed: te.Tensor, outer: Sequence[tirx.PrimExpr], c: tirx.PrimExpr, bits: int) -> tirx.PrimExpr:
    """int32 code of channel ``c`` at ``outer`` in packed storage."""
    slot = slot_bits(bits)
    per_byte = 8 // slot
    byte = i32(packed[(*outer, tirx.floordiv(c, per_byte))])
    return tirx.bitwise_and(tirx.shift_right(byte, tirx.floormod(c, per_byte) * slot), (1 << slot) - 1)


def _check_packed(packed: te.Tensor, shape: tuple[int, ...], bits: int, name: str) -> None:
    if tuple(int(d) for d in packed.shape) != packed_shape(shape, bits):
        raise ValueError(f"{name}: packed shape {tuple(packed.shape)} does not hold {shape} at {bits} bits")


def decode_activation(
    packed: te.Tensor, table: te.Tensor, shape: Sequence[int], bits: int, *, name: str = ACT_DECODE
) -> te.Tensor:
    """int8 activation of logical ``shape`` from its packed codes: ``table[code]``."""
    shape = tuple(int(d) for d in shape)
    _check_packed(packed, shape, bits, name)
    return te.compute(shape, lambda *idx: table[_code_at(packed, idx[:-1], idx[-1], bits)], name=name)


def unpack_codes(packed: te.Tensor, shape: Sequence[int], bits: int, *, name: str = "act_unpack") -> te.Tensor:
    """The codes themselves (int8, 0..2^bits-1) of a packed activation: for ops that work on codes (max pool)."""
    shape = tuple(int(d) for d in shape)
    _check_packed(packed, shape, bits, name)
    return te.compute(shape, lambda *idx: _code_at(packed, idx[:-1], idx[-1], bits).astype("int8"), name=name)


def pack_codes(shape: Sequence[int], code: Callable[..., tirx.PrimExpr], bits: int) -> te.Tensor:
    """uint8 packed storage of the codes ``code(*index)`` (int32 in [0, 2^bits)) of a tensor of logical ``shape``."""
    slot = slot_bits(bits)
    per_byte = 8 // slot

    def f(*idx: tirx.Var) -> tirx.PrimExpr:
        *outer, byte = idx
        word = code(*outer, byte * per_byte)
        for t in range(1, per_byte):
            word = tirx.bitwise_or(word, tirx.shift_left(code(*outer, byte * per_byte + t), t * slot))
        return word.astype("uint8")

    return te.compute(packed_shape(shape, bits), f, name=ACT_PACK)


def binary_search(value: tirx.PrimExpr, threshold: Callable[[int], tirx.PrimExpr], bits: int) -> tirx.PrimExpr:
    """How many of 2^bits - 1 ascending thresholds ``value`` reaches (int32), in ``bits`` compares.

    ``threshold(i)`` loads the i-th threshold; entries past the last real level must never be reached (the
    largest value of the type). The search is a complete decision tree of lazy ``if_then_else`` with constant
    indices (a data-dependent index would defeat TIR's region analysis): any one value takes ``bits`` compares.
    """

    def tree(v: tirx.PrimExpr, lo: int, hi: int) -> tirx.PrimExpr:
        if hi - lo == 1:
            return tirx.const(lo, "int32")
        mid = (lo + hi) // 2
        return tirx.if_then_else(v >= threshold(mid - 1), tree(v, mid, hi), tree(v, lo, mid))

    return let(as_expr(value), "v", lambda v: tree(v, 0, 2**bits))


def lut_code(acc: tirx.PrimExpr, thresholds: te.Tensor, channel: tirx.PrimExpr, bits: int) -> tirx.PrimExpr:
    """Code of an int32 accumulator against its channel's row of ``thresholds`` int32 (O, 2^bits - 1)."""
    return binary_search(i32(acc), lambda i: thresholds[channel, i], bits)


def nl_quantize(x: te.Tensor, thresholds: te.Tensor, table: te.Tensor, bits: int, *, name: str = "nl_quantize"):
    """Float input -> int8 level ``table[code]``, the code found against float32 ``thresholds`` (2^bits - 1,)
    (midpoints between the real levels). NaN reaches no threshold: code 0."""
    return te.compute(x.shape, lambda *idx: table[binary_search(x[idx], lambda i: thresholds[i], bits)], name=name)


@dataclass(frozen=True)
class LutEpilogue:
    """A conv/dense epilogue by LUT-requantize instead of multiply-shift into the uniform grid.

    Two forms. Exact: ``thresholds`` int32 (O, 2^bits - 1) per output channel hold bias, scales and clamp, and the
    raw accumulator is searched (no multiply; O * (2^bits - 1) words of flash). Shared: ``shift`` (and ``mult``
    unless power-of-two) first requantize ``acc + bias`` per channel onto a fine grid common to all channels, then
    one row ``thresholds`` (2^bits - 1,) serves every channel (the choice is ``tvmq.quant.plan``'s).
    """

    thresholds: te.Tensor
    bits: int
    table: te.Tensor | None = None  # int8 (2^bits,): write levels instead of packed codes
    mult: te.Tensor | None = None  # int32 (O,), shared form (None with power-of-two scales)
    shift: te.Tensor | None = None  # int32 (O,), shared form

    @property
    def shared(self) -> bool:
        return len(self.thresholds.shape) == 1

    def apply(self, acc: te.Tensor, bias: te.Tensor | None, name: str) -> te.Tensor:
        if not self.shared:
            if bias is not None:
                raise ValueError(f"{name}: per-channel LUT thresholds hold the bias; pass bias=None")
            return lut_requantize(acc, self.thresholds, self.bits, self.table, name=name)

        def fine(*idx: tirx.PrimExpr) -> tirx.PrimExpr:
            k = idx[-1]
            a = acc[idx] if bias is None else acc[idx] + bias[k]
            return requantize(a, None if self.mult is None else self.mult[k], self.shift[k])

        return lut_requantize(acc, self.thresholds, self.bits, self.table, name=name, value=fine)


def lut_requantize(
    acc: te.Tensor, thresholds: te.Tensor, bits: int, table: te.Tensor | None = None, *,
    name: str = "lut_requantize", value: Callable[..., tirx.PrimExpr] | None = None,
) -> te.Tensor:  # fmt: skip
    """int32 accumulators (..., O) -> b-bit codes, packed along O; with ``table``, the int8 levels ``table[code]``.

    ``thresholds`` (O, 2^bits - 1) per channel are searched with the accumulator itself: they hold the bias, the
    scales and the activation clamp (``tvmq.quant.plan``). One shared row (2^bits - 1,) is searched with
    ``value(*index)`` instead (the accumulator requantized onto the grid of the thresholds).
    """

    def code(*idx: tirx.PrimExpr) -> tirx.PrimExpr:
        if value is None:
            return lut_code(acc[idx], thresholds, idx[-1], bits)
        return binary_search(i32(value(*idx)), lambda i: thresholds[i], bits)

    if table is None:
        return pack_codes(acc.shape, code, bits)
    return te.compute(acc.shape, lambda *idx: table[code(*idx)], name=name)
