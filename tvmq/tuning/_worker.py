"""A compile worker process: lowers and compiles candidates sent over its stdin.

Why a plain subprocess and not ``multiprocessing``: ``spawn`` re-runs the caller's main script in every worker (a
user script calling ``tvmq.tune`` at top level would recurse), and ``fork`` copies a process whose TVM, XGBoost and
MetaSchedule threads may hold locks. Messages are pickles framed by an 8-byte length; the worker keeps the
protocol on a private copy of its stdout and points file descriptor 1 at stderr, so nothing TVM prints can corrupt it.
"""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, BinaryIO

_HEADER = struct.Struct("<Q")


def _send(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _recv(stream: BinaryIO) -> Any:
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        raise EOFError
    (size,) = _HEADER.unpack(head)
    return pickle.loads(stream.read(size))


class WorkerPool:
    """``n`` worker processes; ``map(name, jobs)`` calls ``tvmq.tuning.measure.<name>(*job)`` in them, in order."""

    def __init__(self, n: int) -> None:
        env = {**os.environ, "TVM_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}  # one core each
        cmd = [sys.executable, "-c", "from tvmq.tuning._worker import main; main()"]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                      for _ in range(max(1, n))]  # fmt: skip

    def map(self, name: str, jobs: Sequence[tuple]) -> list[Any]:
        results: list[Any] = [None] * len(jobs)
        queue = list(enumerate(jobs))
        lock = threading.Lock()
        failures: list[BaseException] = []

        def feed(proc: subprocess.Popen) -> None:
            while True:
                with lock:
                    if not queue or failures:
                        return
                    index, job = queue.pop(0)
                try:
                    _send(proc.stdin, (name, job))
                    ok, value = _recv(proc.stdout)
                except (OSError, EOFError) as err:
                    failures.append(RuntimeError(f"a tvmq compile worker stopped: {err!r}"))
                    return
                if not ok:
                    failures.append(RuntimeError(value))
                    return
                results[index] = value

        threads = [threading.Thread(target=feed, args=(p,), daemon=True) for p in self.procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            raise failures[0]
        return results

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    p.stdin.close()
                    p.wait(timeout=10)
                except (OSError, subprocess.TimeoutExpired):
                    p.kill()
                    p.wait()
        self.procs = []


def main() -> None:
    proto_out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything printed from now on goes to stderr
    proto_in = sys.stdin.buffer
    from . import measure

    while True:
        try:
            name, job = _recv(proto_in)
        except EOFError:
            return
        fn: Callable = getattr(measure, name)
        try:
            _send(proto_out, (True, fn(*job)))
        except Exception as err:  # noqa: BLE001 - reported to the parent, which decides
            _send(proto_out, (False, f"{type(err).__name__}: {err}"))
