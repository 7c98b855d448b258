"""The design space of one kernel: the default schedule, plus traced templates MetaSchedule samples and evolves.

MetaSchedule has no schedule rules for the ``c`` target, and its CPU rules know nothing of tvmq's blocks (padding
inlined with a bounds test, requantization epilogues, in-place slabs), so each kernel gets a custom space
(``ScheduleFn``), a list of design spaces:

- ``default``: the core's own device schedule (``schedules/``, whatever it is today: SIMD micro-kernels, plain
  loops). Not a MetaSchedule trace, so it is a mark on the root block (``lower.DEFAULT``) that ``lower.realize``
  expands. It is always measured first: the baseline a tuned record must beat, and the fallback.
- ``tile`` (kernels with one reduction, e.g. conv2d, depthwise, dense, pools, with a chain of epilogues): register
  tiling. The last two spatial loops with more than one iteration (conv: output column and channel; dense: output
  channel) are split with ``sample_perfect_tile`` (inner tile of up to 4 each), every reduction loop too (inner part
  up to 16 for the innermost, up to 4 for the others); the order is outer spatial, outer reduction, inner
  reduction, inner tile, and every inner loop is unrolled: the tile's accumulators stay in registers and each loaded
  input or weight feeds several of them. Epilogues are computed per tile (unrolled), the reduction's initialisation
  leaves the reduction loops. ``tile_window`` is the same with the padded input window a tile reads first copied
  into a small buffer (no bounds test per multiply-accumulate), for padded convolutions.
- ``mk<P>x<Q>`` (int8 convolutions with groups 1, dense): the same P x Q tiles, each tile's reduction tensorized
  into tvmq's micro-kernel ``tvmq_mac_s8_<P>x<Q>`` (``schedules.intrin``): the micro-kernel choice, one design space
  per shape the runtime header defines; the padded window copy's unrolling is sampled.
- ``on_default`` (the only space of a kernel's second workload, its default-scheduled PrimFunc): knobs on top of
  whatever the default schedule is, its small serial loops split and unrolled. Keyed by the default-scheduled
  PrimFunc, these records only apply while ``schedules/`` produces the same default.
- ``slab`` (in-place convolutions whose output overwrites input another output element still reads: the
  ``channel``/``pixel`` slabs of ``schedules/inplace.py``): the slab placement of ``place_slabs`` and only
  order-preserving changes, unrolling (split + unroll) of the reduction and copy loops. Loop order, tiling and
  compute locations stay as the in-place proof requires; candidates also run with the output over the input.
- ``unroll`` (kernels without a reduction: elementwise, add, requantize, transpose, pad, concat): producers
  inlined, the innermost loop split and its inner part unrolled.

Kernels of other shapes (softmax, codebook decoding and packing, several reductions) keep ``default`` and
``on_default`` only. Every choice a template makes from the structure is fixed per kernel; only split factors are
sampled, so MetaSchedule's trace replays and mutations (``MutateTileSize``) stay valid (``_applies`` replays each
template with the smallest and largest factors before offering it). Every candidate carries its task's key
(``lower.TASK``) and its template's name (``lower.TEMPLATE``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from tvm import s_tir, tirx

from ..schedules.inplace import in_slab_kernel, place_slabs, slab_mode
from .lower import DEFAULT, TASK, TEMPLATE, default_schedule, func_hash
from .tasks import Task

TILE_MAX = 4  # inner tile per spatial loop: 4 x 4 accumulators are as many as a Cortex-M keeps in registers
REDUCE_MAX = 16  # unrolled taps of the innermost reduction loop
REDUCE_OUTER_MAX = 4  # ... of the other reduction loops (kernel rows/columns)
UNROLL_MAX = 16  # elementwise kernels: inner part of the innermost loop
_OTHER_STAGES = ("decode", "pack", "_state", "lut")  # codebook and softmax stages: default schedule only


class NotApplicable(Exception):
    """A template does not fit the kernel's structure."""


Template = Callable[[s_tir.Schedule], None]


def _blocks(sch: s_tir.Schedule) -> list:
    return list(sch.get_child_blocks(sch.get_sblock("root")))


def _iter_types(sch: s_tir.Schedule, block) -> list:
    return [iv.iter_type for iv in sch.get(block).iter_vars]


def _is_reduction(sch: s_tir.Schedule, block) -> bool:
    return any(t == tirx.IterVar.CommReduce for t in _iter_types(sch, block))


def _name(sch: s_tir.Schedule, block) -> str:
    return str(sch.get(block).name_hint)


def _extent(sch: s_tir.Schedule, loop) -> int:
    return int(sch.get(loop).extent)


def _check_plain(sch: s_tir.Schedule) -> None:
    for block in _blocks(sch):
        name = _name(sch, block)
        if any(s in name for s in _OTHER_STAGES):
            raise NotApplicable(f"block {name} (codebook or softmax stage)")


def _upstream(sch: s_tir.Schedule, block) -> set[str]:
    """Names of the blocks ``block`` depends on, transitively."""
    names: set[str] = set()
    todo = list(sch.get_producers(block))
    while todo:
        b = todo.pop()
        if _name(sch, b) not in names:
            names.add(_name(sch, b))
            todo += sch.get_producers(b)
    return names


def _inline_producers(sch: s_tir.Schedule, keep: Callable[[object], bool], of=None) -> None:
    """Inline every non-reduction block that has consumers (padding, casts), except those ``keep`` says; with
    ``of``, only blocks upstream of that block (its epilogues stay separate blocks, computed per tile)."""
    upstream = None if of is None else _upstream(sch, of)
    changed = True
    while changed:
        changed = False
        for block in _blocks(sch):
            if upstream is not None and _name(sch, block) not in upstream:
                continue
            if keep(block) or _is_reduction(sch, block) or not sch.get_consumers(block):
                continue
            try:
                sch.compute_inline(block)
            except s_tir.ScheduleError:
                raise NotApplicable(f"block {_name(sch, block)} cannot be inlined") from None
            changed = True
            break


def _single_reduction(sch: s_tir.Schedule):
    reductions = [b for b in _blocks(sch) if _is_reduction(sch, b)]
    if len(reductions) != 1:
        raise NotApplicable(f"{len(reductions)} reduction blocks")
    return reductions[0]


def _consumer_chain(sch: s_tir.Schedule, block) -> list:
    chain = []
    while True:
        consumers = sch.get_consumers(block)
        if not consumers:
            return chain
        if len(consumers) != 1:
            raise NotApplicable("a block with several consumers")
        block = consumers[0]
        chain.append(block)


def _pad_read(sch: s_tir.Schedule, block) -> int | None:
    """Index of the read region of ``block`` that comes from a padding stage (an inlinable producer), if any."""
    producers = {_name(sch, p) for p in sch.get_producers(block) if not _is_reduction(sch, p)}
    for n, region in enumerate(sch.get(block).reads):
        if region.source.name in producers and "pad" in region.source.name:
            return n
    return None


def tile(sch: s_tir.Schedule, *, window: bool = False) -> None:
    """Register tiling of the single reduction (see the module docstring)."""
    _check_plain(sch)
    acc = _single_reduction(sch)
    if in_slab_kernel(_name(sch, acc)) and slab_mode_of(sch) in ("channel", "pixel"):
        raise NotApplicable("order-sensitive in-place slab")
    pad = _pad_read(sch, acc) if window else None
    if window and pad is None:
        raise NotApplicable("no padding to copy")
    pad_block = None
    if pad is not None:
        pad_name = sch.get(acc).reads[pad].source.name
        pad_block = next(p for p in sch.get_producers(acc) if _name(sch, p) == pad_name)
    _inline_producers(sch, keep=lambda b: pad_block is not None and sch.get(b).same_as(sch.get(pad_block)), of=acc)
    chain = _consumer_chain(sch, acc)
    types = _iter_types(sch, acc)
    spatial = next((i for i, t in enumerate(types) if t != tirx.IterVar.DataPar), len(types))
    if any(t != tirx.IterVar.CommReduce for t in types[spatial:]):
        raise NotApplicable("spatial and reduction iterators interleave")
    loops = sch.get_loops(acc)
    if len(loops) != len(types):
        raise NotApplicable("the reduction is not a perfect loop nest")
    s_loops, r_loops = loops[:spatial], loops[spatial:]
    tiled = [i for i in range(spatial) if _extent(sch, s_loops[i]) > 1][-2:]
    if not tiled:
        raise NotApplicable("no spatial loop to tile")
    outer_s, inner_s = [], []
    for i, loop in enumerate(s_loops):
        if i in tiled:
            factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=TILE_MAX)
            o, n = sch.split(loop, factors)
            outer_s.append(o)
            inner_s.append(n)
        else:
            outer_s.append(loop)
    outer_r, inner_r = [], []
    for i, loop in enumerate(r_loops):
        limit = REDUCE_MAX if i == len(r_loops) - 1 else REDUCE_OUTER_MAX
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=limit)
        o, n = sch.split(loop, factors)
        outer_r.append(o)
        inner_r.append(n)
    sch.reorder(*outer_s, *outer_r, *inner_r, *inner_s)
    tile_loop = outer_s[-1]  # innermost outer spatial loop: one tile per iteration
    if pad_block is not None:
        _padded_window_at(sch, acc, pad, pad_block, tile_loop)
    depth = len(outer_s)  # loops up to and including the tile loop
    for block in chain:
        sch.reverse_compute_at(block, tile_loop, preserve_unit_loops=True)  # loop count independent of samples
        for loop in sch.get_loops(block)[depth:]:
            sch.unroll(loop)
    if r_loops:
        init = sch.decompose_reduction(acc, outer_r[0])
        for loop in sch.get_loops(init)[depth:]:
            sch.unroll(loop)
    for loop in (*inner_r, *inner_s):
        sch.unroll(loop)


def slab_mode_of(sch: s_tir.Schedule) -> str | None:
    modes = {slab_mode(_name(sch, b)) for b in _blocks(sch)}
    return next((m for m in ("channel", "pixel", "element") if m in modes), None)


def slab(sch: s_tir.Schedule) -> None:
    """Order-preserving space of an in-place slab convolution: ``place_slabs`` as the default schedule does, then
    the innermost loops split and their inner parts unrolled. Unrolling keeps the execution order exactly."""
    _check_plain(sch)
    if slab_mode_of(sch) not in ("channel", "pixel"):
        raise NotApplicable("no order-sensitive slab")
    _inline_producers(sch, keep=lambda b: slab_mode(_name(sch, b)) is not None)
    place_slabs(sch)
    for name in _all_block_names(sch):
        block = sch.get_sblock(name)
        loops = sch.get_loops(block)
        if not loops or name.endswith("_init"):
            continue
        inner = loops[-1]
        factors = sch.sample_perfect_tile(inner, n=2, max_innermost_factor=UNROLL_MAX)
        sch.unroll(sch.split(inner, factors)[1])


def _all_block_names(sch: s_tir.Schedule) -> list[str]:
    names, todo = [], _blocks(sch)
    while todo:
        block = todo.pop(0)
        names.append(_name(sch, block))
        todo += sch.get_child_blocks(block)
    return names


def unroll(sch: s_tir.Schedule) -> None:
    """Kernels without a reduction: inline producers, split the innermost loop of the output block and unroll."""
    _check_plain(sch)
    if any(_is_reduction(sch, b) for b in _blocks(sch)):
        raise NotApplicable("has a reduction")
    _inline_producers(sch, keep=lambda b: False)
    blocks = _blocks(sch)
    if len(blocks) != 1:
        raise NotApplicable(f"{len(blocks)} blocks left after inlining")
    loops = sch.get_loops(blocks[0])
    if not loops:
        raise NotApplicable("no loop")
    factors = sch.sample_perfect_tile(loops[-1], n=2, max_innermost_factor=UNROLL_MAX)
    sch.unroll(sch.split(loops[-1], factors)[1])


WINDOW_MAX_BYTES = 1024  # padded window of one micro-kernel tile on the stack (as schedules/tiled.py allows)


def microkernel(sch: s_tir.Schedule, p: int, q: int) -> None:
    """Tiles of P pixels (dense: rows) x Q output channels, each tile's whole reduction one call of tvmq's
    micro-kernel ``tvmq_mac_s8_<P>x<Q>`` (``schedules.intrin``; SIMD SMLAD with the DSP extension), reached by
    ``tensorize``, which checks the tile is exactly the intrinsic's multiply-accumulate. A padded input is first
    copied per tile into a window (no bounds test in the kernel); epilogues (requantization, a fused residual ADD)
    run per tile, unrolled. The space's choice is the tile shape, a design space per shape; the window copy's
    unrolling is sampled. For int8 convolutions (groups 1) and dense layers, whatever the default does with them."""
    from ..schedules.intrin import MacTile, mac_intrin
    from ..schedules.primfuncs import GEOMETRY

    _check_plain(sch)
    func = sch.mod["main"]
    geometry = dict((func.attrs or {}).get(GEOMETRY, {}))
    if not geometry:
        raise NotApplicable("no conv2d/dense geometry")
    acc = _single_reduction(sch)
    if slab_mode_of(sch) in ("channel", "pixel"):
        raise NotApplicable("order-sensitive in-place slab")
    dense = str(geometry["op"]) == "dense"
    if not dense and int(geometry["groups"]) != 1:
        raise NotApplicable("grouped or depthwise convolution")
    params = {prm.name: prm for prm in func.params}
    reads = [r.source for r in sch.get(acc).reads if r.source.name != sch.get(acc).writes[0].source.name]
    if any(str(b.dtype) != "int8" for b in reads):
        raise NotApplicable("the reduction reads non-int8 data")
    pad = _pad_read(sch, acc)
    pad_block = None
    if pad is not None:
        pad_name = sch.get(acc).reads[pad].source.name
        pad_block = next(b for b in sch.get_producers(acc) if _name(sch, b) == pad_name)
    elif any(b.name not in params for b in reads):
        raise NotApplicable("the reduction reads a computed buffer")
    _inline_producers(sch, keep=lambda b: pad_block is not None and sch.get(b).same_as(sch.get(pad_block)), of=acc)
    chain = _consumer_chain(sch, acc)
    izp = int(geometry["input_zp"])
    loops = sch.get_loops(acc)
    if dense:
        if len(loops) != 3:
            raise NotApplicable("dense loops")
        i, j, rk = loops
        n, o, k = (_extent(sch, x) for x in loops)
        if n % p or o % q:
            raise NotApplicable(f"{p}x{q} does not divide {n}x{o}")
        io, ii = sch.split(i, [None, p])
        jo, ji = sch.split(j, [None, q])
        sch.reorder(io, jo, ii, ji, rk)
        tile_loop, outer, depth = ii, jo, 2
        intrin = MacTile(p, q, 1, 1, k, izp=izp, dense=True)
    else:
        if len(loops) != 7:
            raise NotApplicable("conv loops")
        b, i, j, k, ry, rx, rc = loops
        ow, o = _extent(sch, j), _extent(sch, k)
        kh, kw, c = (_extent(sch, x) for x in (ry, rx, rc))
        if ow % p or o % q:
            raise NotApplicable(f"{p}x{q} does not divide {ow}x{o}")
        sw = int(geometry["strides"][1])
        dh, dw = (int(v) for v in geometry["dilation"])
        if pad_block is not None and kh * ((p - 1) * sw + (kw - 1) * dw + 1) * c > WINDOW_MAX_BYTES:
            raise NotApplicable("padded window too large for the stack")
        jo, ji = sch.split(j, [None, p])
        ko, ki = sch.split(k, [None, q])
        sch.reorder(b, i, jo, ko, ji, ki, ry, rx, rc)
        if pad_block is not None:
            _padded_window_at(sch, acc, pad, pad_block, jo)
        tile_loop, outer, depth = ji, ko, 4
        intrin = MacTile(p, q, kh, kw, c, sw=sw, dh=dh, dw=dw, izp=izp)
    for block in chain:
        sch.reverse_compute_at(block, outer, preserve_unit_loops=True)
        for loop in sch.get_loops(block)[depth:]:
            sch.unroll(loop)
    init = sch.decompose_reduction(acc, tile_loop)
    for loop in sch.get_loops(init)[depth:]:
        sch.unroll(loop)
    sch.tensorize(tile_loop, mac_intrin(intrin))


def _microkernels() -> dict[str, Template]:
    """One design space per micro-kernel tile shape tvmq's runtime header defines (none if that API changed)."""
    try:
        from ..schedules.microkernels import MAC_TILES
    except ImportError:
        return {}
    return {f"mk{p}x{q}": (lambda sch, p=p, q=q: microkernel(sch, p, q)) for p, q in MAC_TILES}


ON_DEFAULT_MAX = 4  # inner part unrolled per loop of the default schedule
ON_DEFAULT_BODY = 16  # largest loop body (blocks, unrolled loops counted expanded) that may be unrolled again


def _padded_window_at(sch: s_tir.Schedule, acc, pad, pad_block, loop) -> None:
    """Copy the padded input window a tile reads into a buffer at ``loop`` (the pad's zero point folded into the
    copy), its innermost loop split by a sampled factor and unrolled."""
    window = sch.cache_read(acc, pad, "global")
    sch.compute_at(window, loop, preserve_unit_loops=True)
    sch.compute_inline(pad_block)
    copy = sch.get_loops(window)[-1]
    factors = sch.sample_perfect_tile(copy, n=2, max_innermost_factor=UNROLL_MAX)
    sch.unroll(sch.split(copy, factors)[1])


def on_default(sch: s_tir.Schedule) -> None:
    """Knobs on top of the default schedule (the workload *is* the default-scheduled PrimFunc): each serial loop
    whose body is small (at most ``ON_DEFAULT_BODY`` blocks, unrolled loops counted expanded) is split with a
    sampled inner factor (1 = unchanged) and the inner part unrolled. Only small bodies: unrolling a loop
    multiplies everything inside it (inlined micro-kernels, unrolled epilogues, window copies) into C that takes gcc
    minutes. Splitting and unrolling keep the execution order, so the space is safe for in-place kernels too.

    The loops are found by walking the PrimFunc (untraced), then reached in the trace through one block under each
    (``get_loops`` of that block, by position), innermost first so earlier splits never shift a later position."""
    targets = _split_targets(sch.mod["main"])
    if not targets:
        raise NotApplicable("no small serial loop")
    for _, block, index in sorted(targets, key=lambda t: -t[0]):
        loop = sch.get_loops(sch.get_sblock(block))[index]
        factors = sch.sample_perfect_tile(loop, n=2, max_innermost_factor=ON_DEFAULT_MAX)
        sch.unroll(sch.split(loop, factors)[1])


def _split_targets(func: tirx.PrimFunc) -> list[tuple[int, str, int]]:
    """(depth, a block under the loop, the loop's position in that block's ``get_loops``) of every loop to split."""
    out: list[tuple[int, str, int]] = []

    def first_block(stmt: tirx.Stmt) -> str | None:
        todo = [stmt]
        while todo:
            node = todo.pop(0)
            if isinstance(node, s_tir.stmt.SBlockRealize):
                return str(node.block.name_hint)
            if isinstance(node, tirx.SeqStmt):
                todo.extend(node.seq)
            elif isinstance(node, tirx.IfThenElse):
                todo.append(node.then_case)
            elif isinstance(getattr(node, "body", None), tirx.Stmt):
                todo.append(node.body)
        return None

    def walk(stmt: tirx.Stmt, loops: list[tirx.For], depth: int) -> None:
        if isinstance(stmt, tirx.For):
            if _serial(stmt) and isinstance(stmt.min, tirx.IntImm) and int(stmt.min) == 0:
                block = first_block(stmt.body)
                if block is not None and _body_size(stmt.body) <= ON_DEFAULT_BODY:
                    out.append((depth, block, len(loops)))
            walk(stmt.body, [*loops, stmt], depth + 1)
        elif isinstance(stmt, tirx.SeqStmt):
            for x in stmt.seq:
                walk(x, loops, depth)
        elif isinstance(stmt, s_tir.stmt.SBlockRealize):
            block = stmt.block
            if "partition" in str(block.name_hint):
                return  # loop_partition's copies: splitting one can change another's loops on replay
            walk(block.body, [], depth)  # get_loops stops at the enclosing block
            if block.init is not None:
                walk(block.init, [], depth)
        elif isinstance(stmt, tirx.IfThenElse):
            walk(stmt.then_case, loops, depth)
            if stmt.else_case is not None:
                walk(stmt.else_case, loops, depth)
        elif isinstance(getattr(stmt, "body", None), tirx.Stmt):
            walk(stmt.body, loops, depth)

    walk(func.body, [], 0)
    return out


def _serial(node: tirx.For) -> bool:
    return node.kind == tirx.ForKind.SERIAL and isinstance(node.extent, tirx.IntImm) and int(node.extent) > 1


def _body_size(stmt: tirx.Stmt) -> int:
    """Blocks inside ``stmt``, each unrolled loop counted as many times as it iterates, serial loops once."""
    if isinstance(stmt, tirx.For):
        inner = _body_size(stmt.body)
        unrolled = stmt.kind == tirx.ForKind.UNROLLED and isinstance(stmt.extent, tirx.IntImm)
        return inner * int(stmt.extent) if unrolled else inner
    if isinstance(stmt, tirx.SeqStmt):
        return sum(_body_size(x) for x in stmt.seq)
    if isinstance(stmt, s_tir.stmt.SBlockRealize):
        block = stmt.block
        inner = _body_size(block.body) + (_body_size(block.init) if block.init is not None else 0)
        return max(1, inner)
    if isinstance(stmt, tirx.IfThenElse):
        return _body_size(stmt.then_case) + (_body_size(stmt.else_case) if stmt.else_case is not None else 0)
    body = getattr(stmt, "body", None)
    return _body_size(body) if isinstance(body, tirx.Stmt) else 0


TEMPLATES: dict[str, Template] = {
    "tile": tile,
    "tile_window": lambda sch: tile(sch, window=True),
    **_microkernels(),
    "slab": slab,
    "unroll": unroll,
}
ON_DEFAULT = "on_default"  # the only space of a task whose workload is a default schedule (``tasks.on_default``)


def templates_for(task: Task) -> list[str]:
    """Which traced templates apply to a task (tried on a scratch schedule; ``default`` is always there)."""
    if task.base is not None:
        return [ON_DEFAULT] if _applies(task, on_default) else []
    names = []
    for name, template in TEMPLATES.items():
        if task.order_sensitive and name != "slab":
            continue  # only order-preserving changes for kernels whose output overwrites input still to be read
        if _applies(task, template):
            names.append(name)
    return names


def _applies(task: Task, template: Template) -> bool:
    """The template fits the task, and its trace replays with the smallest and the largest inner factors (what
    MetaSchedule's mutations and fresh samples will ask for)."""
    sch = s_tir.Schedule(task.func)
    try:
        template(sch)
        trace = sch.trace
        samples = [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]
        for largest in (False, True):
            tr = trace
            for inst in samples:
                outer, inner = (int(v) for v in trace.decisions[inst])
                total, limit = outer * inner, int(inst.attrs[1])
                pick = max(d for d in range(1, total + 1) if total % d == 0 and d <= limit) if largest else 1
                tr = tr.with_decision(inst, [total // pick, pick], remove_postproc=True)
            tr.apply_to_schedule(s_tir.Schedule(task.func), remove_postproc=True)
    except Exception:  # noqa: BLE001 - NotApplicable, ScheduleError, or a micro-kernel API that changed
        return False
    return True


def template(name: str) -> Template:
    return on_default if name == ON_DEFAULT else TEMPLATES[name]


def register_intrinsics(func: tirx.PrimFunc, shapes: set[tuple[int, int]] | None = None) -> None:
    """Register every tensor intrinsic the micro-kernel spaces (those of ``shapes`` (P, Q), or all) would use on
    ``func`` (replaying a trace that tensorizes needs them; tvmq registers intrinsics on first use)."""
    for name, tmpl in TEMPLATES.items():
        if name.startswith("mk") and (shapes is None or tuple(int(v) for v in name[2:].split("x")) in shapes):
            with contextlib.suppress(Exception):
                tmpl(s_tir.Schedule(func))


def mark_default(sch: s_tir.Schedule, task: Task, default_hash: str) -> None:
    """The default candidate: marks only, ``lower.realize`` applies the default schedule."""
    root = sch.get_sblock("root")
    sch.annotate(root, TASK, task.key)
    sch.annotate(root, TEMPLATE, "default")
    sch.annotate(root, DEFAULT, default_hash)


def space_fn(task: Task, default_hash: str, names: list[str]) -> Callable[[s_tir.Schedule], list[s_tir.Schedule]]:
    """The ``ScheduleFn`` of a task: the default mark (not for a task on top of the default: its workload is it),
    then one design space per applicable template."""

    def fn(sch: s_tir.Schedule) -> list[s_tir.Schedule]:
        spaces = []
        if task.base is None:
            base = sch.copy()
            mark_default(base, task, default_hash)
            spaces.append(base)
        for name in names:
            s = sch.copy()
            with contextlib.suppress(Exception):  # templates_for tried each already
                template(name)(s)
                root = s.get_sblock("root")
                s.annotate(root, TASK, task.key)
                s.annotate(root, TEMPLATE, name)
                spaces.append(s)
        return spaces

    return fn


def default_hash(task: Task, micro) -> str:
    """Hash of what today's default schedule makes of the task's workload (names its default record)."""
    from .database import workload_mod

    return func_hash(default_schedule(micro)(workload_mod(task.func)["main"]))
