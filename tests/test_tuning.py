"""tvmq.tune: MetaSchedule + XGBoost over a small model's kernels, measured on QEMU (mps2-an386), into a database.

One short tuning run (module fixture) serves most tests: the database is written and reloads, ``tvmq.build(...,
database=)`` is bit-exact on QEMU against the host, all MetaSchedule work stays in a temporary directory. Other tests
resume that database, inject a schedule that changes results, and check the input errors.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from test_ops import _model, _node, _w
from tvm import s_tir

import tvmq
from tvmq.errors import ConfigError, TargetError
from tvmq.tuning import schedule_from_database, space
from tvmq.tuning.database import RECORDS, WORKLOADS, candidate_key, open_database, replay
from tvmq.tuning.lower import default_schedule
from tvmq.tuning.measure import Measurer
from tvmq.tuning.tasks import extract_tasks

TARGET = "c -mcpu=cortex-m4"
BOARD = "mps2-an386"
TRIALS = 16  # 6 default measurements + one round of 10 candidates


def _small_model() -> tvmq.QuantizedModel:
    """conv3x3 + ReLU, conv3x3 with a residual ADD (in place over the residual), depthwise conv3x3 (in place over
    its input, channel slabs), global average pool, dense: every kind of design space on 6x6 inputs."""
    inits = {"w1": _w(1, 4, 2, 3, 3), "b1": _w(2, 4), "w2": _w(3, 4, 4, 3, 3), "b2": _w(4, 4), "wd": _w(7, 4, 1, 3, 3),
             "w3": _w(5, 3, 4), "b3": _w(6, 3)}  # fmt: skip
    nodes = [
        _node("Conv", ["x", "w1", "b1"], "c1", pads=[1, 1, 1, 1]), _node("Relu", ["c1"], "r1"),
        _node("Conv", ["r1", "w2", "b2"], "c2", pads=[1, 1, 1, 1]), _node("Add", ["c2", "r1"], "a"),
        _node("Relu", ["a"], "r2"), _node("Conv", ["r2", "wd"], "d", pads=[1, 1, 1, 1], group=4),
        _node("Relu", ["d"], "r3"), _node("GlobalAveragePool", ["r3"], "g"), _node("Flatten", ["g"], "f"),
        _node("Gemm", ["f", "w3", "b3"], "y", transB=1),
    ]  # fmt: skip
    model = _model(nodes, [("x", [1, 2, 6, 6])], [("y", None)], inits)
    calib = np.random.default_rng(0).normal(size=(16, 2, 6, 6)).astype(np.float32)
    return tvmq.quantize(model, calib, progress=False)


@pytest.fixture(scope="module")
def small() -> tvmq.QuantizedModel:
    return _small_model()


@pytest.fixture(scope="module")
def tuned(small, tmp_path_factory):
    """One short tuning run; the parent of the database holds a sentinel file that must survive untouched."""
    parent = tmp_path_factory.mktemp("tuning")
    (parent / "keep.txt").write_text("mine")
    before = set(Path(tempfile.gettempdir()).glob("tvmq-tune-*"))
    report = tvmq.tune(small, TARGET, board=BOARD, trials=TRIALS, database=parent / "db", progress=False)
    leftovers = set(Path(tempfile.gettempdir()).glob("tvmq-tune-*")) - before
    return report, parent, leftovers


def test_tune_writes_a_database_and_a_report(tuned, small) -> None:
    report, parent, _ = tuned
    db_dir = parent / "db"
    lines = (db_dir / RECORDS).read_text().splitlines()
    assert len(lines) == TRIALS  # the baseline counts: the budget is what the database holds
    assert len(report.kernels) == 6  # conv, conv + residual add, depthwise, transpose (NCHW flatten), pool, dense
    assert len((db_dir / WORKLOADS).read_text().splitlines()) >= len(report.kernels)
    assert report.trials_run == TRIALS - len(report.kernels)
    for k in report.kernels:
        assert k.default_instructions and k.best_instructions and k.best_instructions <= k.default_instructions
    assert report.total("best") <= report.total("default")
    slab = next(k for k in report.kernels if k.inplace and "order-preserving" in k.inplace)
    assert set(slab.spaces) <= {"default", "slab", "on_default"}  # in-place channel slabs: order-preserving only
    json.dumps(report.to_json())
    assert "all kernel calls" in report.table()


def test_metaschedule_work_stays_in_a_temporary_directory(tuned) -> None:
    _, parent, leftovers = tuned
    assert sorted(p.name for p in parent.iterdir()) == ["db", "keep.txt"]
    assert (parent / "keep.txt").read_text() == "mine"
    assert sorted(p.name for p in (parent / "db").iterdir()) == sorted([RECORDS, WORKLOADS])
    assert not leftovers


def test_database_reloads_and_build_is_bit_exact_on_qemu(tuned, small) -> None:
    _, parent, _ = tuned
    schedule = schedule_from_database(parent / "db", TARGET)
    tasks = extract_tasks(small)
    assert all(schedule(t.func) is not None for t in tasks)
    artifact = tvmq.build(small, TARGET, name="small_tuned", database=parent / "db")
    plain = tvmq.build(small, TARGET, name="small_plain")
    assert artifact.files["model.c"] != plain.files["model.c"]  # at least one kernel took a tuned schedule
    x = np.random.default_rng(3).normal(size=(6, *small.input_shape[1:])).astype(np.float32)
    codes = small.quantize_input(x)
    result = tvmq.qemu.run(artifact, codes, board=BOARD, progress=False)
    np.testing.assert_array_equal(result.raw_outputs, small.run_int(codes))


def test_resuming_continues_without_measuring_again(tuned, tmp_path) -> None:
    report, parent, _ = tuned
    db_dir = tmp_path / "db"
    shutil.copytree(parent / "db", db_dir)
    more = tvmq.tune(_small_model(), TARGET, board=BOARD, trials=TRIALS + 6, database=db_dir, progress=False)
    assert more.trials_run == 6
    db = open_database(db_dir)
    records = db.get_all_tuning_records()
    assert len(records) == TRIALS + 6
    keys = [candidate_key(replay(r, r.workload.mod)) for r in records]
    assert len(set(keys)) == len(keys)  # no candidate measured twice
    again = tvmq.tune(_small_model(), TARGET, board=BOARD, trials=TRIALS + 6, database=db_dir, progress=False)
    assert again.trials_run == 0 and again.qemu_boots == 0


def _wrong(sch: s_tir.Schedule) -> None:
    """The tile template with its int32 accumulator narrowed to int8: sums wrap, results change."""
    space.tile(sch)
    name = next(n for n in space._all_block_names(sch) if "_acc" in n and "init" not in n)  # the update block
    sch.unsafe_set_dtype(sch.get_sblock(name), 0, "int8")


def test_a_candidate_that_changes_results_is_rejected(small, tmp_path, monkeypatch) -> None:
    task = next(t for t in extract_tasks(small) if "tile" in space.templates_for(t))
    sch = s_tir.Schedule(task.func)
    _wrong(sch)
    from tvmq.device.boards import get_board
    from tvmq.target import parse_target

    micro = parse_target(TARGET)
    measurer = Measurer([task], micro, get_board(BOARD), tmp_path / "m")
    try:
        right, wrong = measurer.measure(measurer.compile([(task, default_schedule(micro)(task.func), None),
                                                          (task, sch.mod["main"], None)]))  # fmt: skip
    finally:
        measurer.close()
    assert right.instructions and right.error is None
    assert wrong.instructions is None and "wrong result" in wrong.error

    # inside a tuning run: every candidate of the injected space is recorded as failed, never as best
    monkeypatch.setattr(space, "TEMPLATES", {"tile": _wrong})
    report = tvmq.tune(small, TARGET, board=BOARD, trials=12, database=tmp_path / "db", progress=False)
    db = open_database(tmp_path / "db")
    wrong = [r for r in db.get_all_tuning_records() if "unsafe_set_dtype" in str(r.trace)]
    assert len(wrong) == 12 - len(report.kernels)  # the first round went to the largest kernel's injected space
    assert all(r.run_secs is None for r in wrong)
    kernel = max(report.kernels, key=lambda k: k.failed)
    assert kernel.failed == len(wrong) and not kernel.best.startswith("tile")
    assert any("wrong result" in e for e in kernel.errors)
    tuned = tvmq.build(small, TARGET, database=tmp_path / "db")
    assert tuned.files["model.c"] == tvmq.build(small, TARGET).files["model.c"]  # nothing wrong was applied


def test_a_candidate_with_too_much_code_is_refused(small, tmp_path) -> None:
    """Flash counts: a fully unrolled convolution (several times the default schedule's machine code) is refused
    before it runs, naming the sizes; with ``code_growth=None`` it runs (and is bit-exact)."""
    task = next(t for t in extract_tasks(small) if t.op.startswith("conv2d"))
    sch = s_tir.Schedule(task.func)
    for block in sch.get_child_blocks(sch.get_sblock("root")):
        for loop in sch.get_loops(block):
            sch.unroll(loop)
    from tvmq.device.boards import get_board
    from tvmq.target import parse_target

    micro = parse_target(TARGET)
    for growth in (2.0, None):
        measurer = Measurer([task], micro, get_board(BOARD), tmp_path / f"m{growth}", code_growth=growth)
        try:
            default, unrolled = measurer.compile([(task, default_schedule(micro)(task.func), None),
                                                  (task, sch.mod["main"], None)])  # fmt: skip
            limit = measurer.code_limit(task)
            results = measurer.measure([default, unrolled])
        finally:
            measurer.close()
        assert 0 < default.code_bytes < unrolled.code_bytes and results[0].instructions
        if growth is None:
            assert limit is None and results[1].instructions and results[1].error is None
        else:
            assert limit == max(2 * default.code_bytes, default.code_bytes + 512) < unrolled.code_bytes
            assert results[1].instructions is None
            assert f"{unrolled.code_bytes} B of code, over the limit of {limit} B" in results[1].error


def test_templates_replay_with_any_decision(small) -> None:
    """MetaSchedule mutates sampled tile sizes and replays traces: every template must replay with any of them."""
    for task in extract_tasks(small):
        for name in space.templates_for(task):
            sch = s_tir.Schedule(task.func, seed=7)
            space.TEMPLATES[name](sch)
            trace = sch.trace
            samples = [i for i in trace.insts if i.kind.name == "SamplePerfectTile"]
            for choice in ("first", "last"):
                tr = trace
                for inst in samples:
                    outer, inner = (int(v) for v in trace.decisions[inst])
                    total, limit = outer * inner, int(inst.attrs[1])
                    divisors = [d for d in range(1, total + 1) if total % d == 0 and d <= limit]
                    pick = divisors[0] if choice == "first" else divisors[-1]
                    tr = tr.with_decision(inst, [total // pick, pick], remove_postproc=True)
                tr.apply_to_schedule(s_tir.Schedule(task.func), remove_postproc=True)


def test_bad_inputs_raise_clear_errors(small, tmp_path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="not a directory"):
        tvmq.tune(small, TARGET, database=afile, trials=4)
    with pytest.raises(TargetError, match="board 'mps2-an999'"):
        tvmq.tune(small, TARGET, board="mps2-an999", database=tmp_path / "db", trials=4)
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ConfigError, match="trials"):
            tvmq.tune(small, TARGET, database=tmp_path / "db", trials=bad)
    with pytest.raises(ConfigError, match="QuantizedModel"):
        tvmq.tune("model.onnx", TARGET, database=tmp_path / "db", trials=4)
    with pytest.raises(ConfigError, match="does not exist"):
        tvmq.build(small, TARGET, database=tmp_path / "missing")
    with pytest.raises(ConfigError, match="not a directory"):
        tvmq.build(small, TARGET, database=afile)
    with pytest.raises(ConfigError, match="either schedule= or database="):
        tvmq.build(small, TARGET, database=tmp_path, schedule=lambda f: f)
    assert not (tmp_path / "db").exists()  # nothing is created before the arguments are checked


def test_cli_tune_and_build_with_database(tmp_path, capsys) -> None:
    from tvmq.cli import main

    model = Path(tvmq.examples.__file__).parent / "data" / "digits.int8.tflite"
    rc = main(["tune", str(model), "--trials", "5", "--database", str(tmp_path / "db"), "--no-progress",
               "--json", str(tmp_path / "report.json")])  # fmt: skip
    out = capsys.readouterr().out
    assert rc == 0 and "all kernel calls" in out
    assert json.loads((tmp_path / "report.json").read_text())["kernels"]
    rc = main(["build", str(model), "--database", str(tmp_path / "db"), "-o", str(tmp_path / "out")])
    assert rc == 0 and (tmp_path / "out" / "model.c").is_file()
    assert main(["tune", str(model), "--trials", "0", "--database", str(tmp_path / "db"), "--no-progress"]) == 2


def test_kernels_alone_take_their_constants() -> None:
    from tvmq.schedules.primfuncs import qdense_primfunc

    from tvmq.tuning.tasks import kernel_tasks

    func = qdense_primfunc((1, 16), (4, 16), input_zp=-3)
    weight = np.arange(64, dtype=np.int8).reshape(4, 16)
    (task,) = kernel_tasks({"dense": (func, {"weight": weight})})
    names = [p.name for p in func.params[:-1]]
    np.testing.assert_array_equal(task.inputs[0][names.index("weight")], weight)
    shift = task.inputs[0][names.index("shift")]
    mult = task.inputs[0][names.index("mult")]
    assert (shift <= 0).all() and (mult >= 1 << 30).all()  # valid requantization parameters, not any int32
    assert task.constant[names.index("weight")] and not task.constant[names.index("data")]
    with pytest.raises(ValueError, match="no input parameter"):
        kernel_tasks({"dense": (func, {"wieght": weight})})
