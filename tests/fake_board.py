"""A fake board for tests: replays a recorded tvmq device session (``tvmq profile --record``) on a pty.

    python fake_board.py SESSION [--corrupt N] [--silent]

Prints the pty's device path (what ``--port`` gets) on one line, then plays the device: writes the session's
device lines (``<``) up to the next host line (``>``), waits for the host to send exactly that line, and so on.
``--corrupt N`` changes one hex digit of the N-th device frame (the wire corrupting it); ``--silent`` never
answers (a board without tvmq's firmware). A host line that differs from the recording ends it with status 3.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import tty
from pathlib import Path


def _corrupt(line: str) -> str:
    at = line.index("@tvmq:") + 6 + 30  # inside the payload: only the checksum can tell
    return line[:at] + ("1" if line[at] == "0" else "0") + line[at + 1 :]


def _session(path: str) -> list[tuple[str, str]]:
    """The (direction, line) pairs of a session file (tvmq.device.link.Transcript's format; read here without
    importing tvmq, so the fake board starts in milliseconds)."""
    lines = Path(path).read_text().splitlines()
    return [(raw[0], raw[2:]) for raw in lines if raw[:2] in ("> ", "< ")]


def _read_line(fd: int) -> bytes:
    data = bytearray()
    while not data.endswith(b"\n"):
        chunk = os.read(fd, 1)
        if not chunk:
            raise EOFError
        data += chunk
    return bytes(data)


def main() -> int:
    args = argparse.ArgumentParser()
    args.add_argument("session")
    args.add_argument("--corrupt", type=int, default=None)
    args.add_argument("--silent", action="store_true")
    opts = args.parse_args()
    master, slave = os.openpty()
    tty.setraw(slave)  # no echo, no line editing: bytes as sent (pyserial sets the same when it opens the port)
    print(os.ttyname(slave), flush=True)
    if opts.silent:
        while True:
            time.sleep(3600)
    frames = 0
    for direction, text in _session(opts.session):
        if direction == "<":
            if "@tvmq:" in text:
                frames += 1
                if frames == opts.corrupt:
                    text = _corrupt(text)
            os.write(master, text.encode() + b"\r\n")
            continue
        got = _read_line(master).decode(errors="replace").rstrip("\r\n")
        if got != text:
            print(f"fake board: host sent {got!r}, the recording has {text!r}", file=sys.stderr, flush=True)
            return 3
    while True:  # the session is over: stay attached until the test ends us
        time.sleep(3600)


if __name__ == "__main__":
    sys.exit(main())
