"""The ``tvmq`` console script: build -> run on QEMU, help everywhere, errors as one clear line (exit 2)."""

from __future__ import annotations

import json

import numpy as np
import pytest

import tvmq
from tvmq.cli import main


@pytest.mark.parametrize("command", [[], ["demo"], ["quantize"], ["build"], ["run"]])
def test_help_everywhere(command: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: tvmq" in capsys.readouterr().out


@pytest.fixture(scope="module")
def digits_files(tmp_path_factory, digits):
    root = tmp_path_factory.mktemp("cli")
    np.savez(root / "calib.npz", calibration=digits.calibration[:64])
    np.save(root / "x.npy", digits.x_test[:20])
    return root


def test_build_then_run_on_qemu(digits_files, digits, capsys) -> None:
    out = digits_files / "lib"
    assert main(["build", str(digits.model_path), "--calib", str(digits_files / "calib.npz"),
                 "--target", "c -mcpu=cortex-m4", "-o", str(out), "--name", "digits"]) == 0  # fmt: skip
    assert json.loads((out / "metadata.json").read_text())["target"]["mcpu"] == "cortex-m4"
    assert "arena" in capsys.readouterr().out
    raw = digits_files / "raw.npy"
    assert main(["run", str(out), "--board", "mps2-an386", "--input", str(digits_files / "x.npy"),
                 "--output", str(raw), "--json", str(digits_files / "run.json")]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "instructions per inference" in printed and "arena" in printed
    qmodel = tvmq.quantize(digits.model_path, digits_files / "calib.npz", progress=False)
    np.testing.assert_array_equal(np.load(raw), qmodel.run_int(qmodel.quantize_input(digits.x_test[:20])))
    assert json.loads((digits_files / "run.json").read_text())["instructions"] > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--target", "c -mcpu=cortex-a72"], "core 'cortex-a72' is not supported"),
        (["--target", "llvm"], "kind 'llvm' is not supported"),
    ],
)
def test_build_errors_are_one_line(digits_files, digits, args, message, capsys) -> None:
    code = main(["build", str(digits.model_path), "--calib", str(digits_files / "calib.npz"), "-o",
                 str(digits_files / "never"), *args])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("tvmq: error:") and message in err and "Traceback" not in err  # before calibration
    assert not (digits_files / "never").exists()


def test_build_into_unwritable_place(digits_files, digits, capsys) -> None:
    blocker = digits_files / "blocker"
    blocker.write_text("")
    code = main(["build", str(digits.model_path), "--calib", str(digits_files / "calib.npz"), "-o",
                 str(blocker / "lib")])  # fmt: skip
    assert code == 2
    assert "cannot export to" in capsys.readouterr().err


def test_run_with_missing_input_file(digits_files, capsys) -> None:
    assert main(["run", str(digits_files), "--input", str(digits_files / "nope.npy")]) == 2
    assert "does not exist" in capsys.readouterr().err
