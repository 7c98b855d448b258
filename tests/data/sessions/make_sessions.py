"""Write the device sessions tests/test_profile_replay.py replays (run from the repository root).

- ``mps2-an386_fake.log`` is recorded: ``tvmq profile`` of the fake artifact (tests/device_fixtures.py) on the
  bare-metal QEMU firmware with ``--record``, so its frames are the firmware's own bytes.
- ``nucleo_f746zg_fake.log`` is synthetic: no board is attached to this project's machines. It has the shape the
  Zephyr application sends (Zephyr's boot banner, the runner's ready line, INFO with the DWT timing API at
  216 MHz, RESULT frames with cycle counts), built with tvmq.device.protocol; its outputs are the fake model's
  (out = in + 1) and its cycle counts are made up.

Both answer the inputs ``tvmq profile --samples 3`` sends to a model that is not a tvmq example (random int8
codes, seed 0).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # tests/: device_fixtures

from device_fixtures import expected_raw, write_fake_artifact  # noqa: E402

from tvmq.device.link import Transcript  # noqa: E402
from tvmq.device.profile import profile  # noqa: E402
from tvmq.device.protocol import FrameType, InferRequest, Info, Result, Timer, encode_frame  # noqa: E402

SAMPLES = 3


def recorded_qemu_session() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        fake = write_fake_artifact(Path(tmp) / "fake")
        profile(fake, "mps2-an386", samples=SAMPLES, progress=False, record=HERE / "mps2-an386_fake.log")


def synthetic_nucleo_session() -> None:
    info = Info(64, 10, 3, Timer.CYCLES, 3, 216_000_000, 4 + 4 * 64, 16 * 9, "fake", "nucleo_f746zg",
                "tvmq Zephyr 4.2.0")  # fmt: skip
    x = np.random.default_rng(0).integers(-128, 128, size=(SAMPLES, 8, 8, 1)).astype(np.int8)
    t = Transcript("synthetic session in the Zephyr app's format (tests/data/sessions/make_sessions.py): not "
                   "captured from a board")  # fmt: skip
    t.lines += [("<", "*** Booting Zephyr OS build v4.2.0 ***"),
                ("<", "tvmq: model fake ready on nucleo_f746zg (timing API cycles at 216000000 Hz): send tvmq "
                      "protocol frames")]  # fmt: skip
    t.add(">", encode_frame(FrameType.HELLO, b"", 1))
    t.add("<", encode_frame(FrameType.INFO, info.encode(), 1))
    for i, sample in enumerate(x):
        seq = i + 2
        t.add(">", encode_frame(FrameType.INFER, InferRequest(sample.reshape(-1)).encode(), seq))
        result = Result(0, 9_120 + 4 * i, [2_300 + i, 6_410 + i, 95 + i], expected_raw(sample[None])[0])
        t.add("<", encode_frame(FrameType.RESULT, result.encode(), seq))
    t.write(HERE / "nucleo_f746zg_fake.log")


if __name__ == "__main__":
    recorded_qemu_session()
    synthetic_nucleo_session()
