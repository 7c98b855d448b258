"""Convolutions that may write their output over their own input: one slab at a time through a small buffer.

A convolution's input usually dies at the convolution, yet a plain kernel needs input and output alive together,
which makes depthwise-separable stacks peak at twice their largest activation. Two kernel orders make the overlap
safe (TinyEngine's in-place depthwise, and its per-pixel analogue for 1x1 convolutions):

- ``channel``: depthwise with one output channel per input channel. Channel c of the output is computed for every
  pixel into a buffer of OH*OW values, then written to the channel-c slots of the output. Those slots are channel c
  of input pixels 0..OH*OW-1, which no other channel reads: any stride, padding or dilation is safe.
- ``pixel``: 1x1 convolution. Pixel p's output channels go to a buffer of O values, then to bytes
  [p*O, (p+1)*O) of the output, which must lie before every later pixel's input. With O <= C (and any stride)
  the output may start where the input starts; an expanding 1x1 (O > C) starts ``inplace_shift`` bytes before
  the input, so input and output together take no more than the output alone.

The arithmetic is the plain convolution's; only the loop order and the slab buffer differ, so the host build
(separate buffers) and the device build (output over input) agree bit for bit. ``default_schedule`` places the
slab (``place_slabs``); any other schedule must keep the same order.
"""

from __future__ import annotations

from tvm import s_tir, te

SLAB = "inplace_slab"  # block-name marker of a slab stage, followed by "_channel" or "_pixel"
MODES = ("channel", "pixel")  # in-place orders
ELEMENT = "element"  # no overlap with the data: one output element at a time, read by a fused epilogue


def check_inplace(mode: str, data_shape, weight_shape, *, groups: int, padding, coded: bool) -> None:
    """ValueError unless the convolution may run in ``mode`` over its own input."""
    _, _, _, c = (int(d) for d in data_shape)
    o, kh, kw, _ = (int(d) for d in weight_shape)
    if mode not in MODES:
        raise ValueError(f"in-place mode {mode!r}: expected one of {MODES}")
    if coded:
        raise ValueError("in-place convolutions work on int8 storage (no packed codes, codebook weights or LUT)")
    if mode == "channel" and not (groups == c == o):
        raise ValueError(f"in-place 'channel' needs a depthwise convolution with O == C (groups {groups}, C {c}, "
                         f"O {o})")  # fmt: skip
    if mode == "pixel" and not (groups == 1 and kh == kw == 1 and not any(padding)):
        raise ValueError(f"in-place 'pixel' needs an unpadded 1x1 convolution (kernel {kh}x{kw}, groups {groups}, "
                         f"padding {tuple(padding)})")  # fmt: skip


def inplace_shift(mode: str, data_shape, out_shape, strides) -> int:
    """Bytes by which the output starts before the input (negative: after it) in ``mode`` (int8 storage).

    ``channel`` writes only slots of channels already done, so any whole-pixel shift within the input is safe; a
    strided depthwise puts its smaller output at the input's end, which leaves room in front for a following
    expanding 1x1. ``pixel``: writing output pixel p must not reach the input pixel of output pixel p + 1, i.e.
    ``shift >= (p + 1) * O - C * in_pixel(p + 1)`` for every p.
    """
    _, h, w, c = (int(d) for d in data_shape)
    _, oh, ow, o = (int(d) for d in out_shape)
    if mode == "channel":
        return -max(0, h * w - oh * ow) * c
    sh, sw = (int(s) for s in strides)
    need = [q * o - c * ((q // ow) * sh * w + (q % ow) * sw) for q in range(1, oh * ow)]
    return max(0, *need) if need else 0


def slab_name(name: str, mode: str) -> str:
    return f"{name}_{SLAB}_{mode}"


def in_slab_kernel(block_name: str) -> bool:
    """A block of an in-place convolution's slab (the slab, its accumulator, its padding): ``place_slabs``
    schedules these, the generic rules leave them alone."""
    return SLAB in block_name


def slab_mode(block_name: str) -> str | None:
    """The mode ("channel", "pixel" or "element") of a slab stage (not its accumulator or padding), else None."""
    return next((m for m in (*MODES, ELEMENT) if block_name.endswith(f"{SLAB}_{m}")), None)


def write_slab(slab: te.Tensor, name: str) -> te.Tensor:
    """The output stage: a copy of the slab stage, which the schedule keeps as the only write to the output."""
    return te.compute(slab.shape, lambda *idx: slab[idx], name=name)


def place_slabs(sch: s_tir.Schedule) -> None:
    """Compute each slab stage (and its accumulator) per output channel, pixel or element of its writer.

    The "element" slab serves a convolution with a fused residual ADD: with the convolution's requantized value
    kept in a one-element buffer, TVM's simplifier never sees the two requantizations as one expression (inlined,
    it takes minutes on it)."""
    for block in list(sch.get_child_blocks(sch.get_sblock("root"))):
        mode = slab_mode(sch.get(block).name_hint)
        if mode is None:
            continue
        (writer,) = sch.get_consumers(block)
        b, i, j, k = sch.get_loops(writer)
        if mode == "channel":
            sch.reorder(k, b, i, j)
            sch.compute_at(block, k)
        else:
            sch.compute_at(block, j if mode == "pixel" else k)
        for acc in sch.get_producers(block):
            sch.compute_at(acc, sch.get_loops(block)[-1])
            outer = [sch.get(loop) for loop in sch.get_loops(block)]
            own = [loop for loop in sch.get_loops(acc) if not any(sch.get(loop).same_as(o) for o in outer)]
            if own:  # the initialisation leaves the reduction loops: no per-tap branch in C
                sch.decompose_reduction(acc, own[0])
