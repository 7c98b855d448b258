"""Run Relax modules on the host: compile with LLVM once, call the VM per sample."""

from __future__ import annotations

import numpy as np
import tvm
from tvm import relax


class HostRunner:
    """A Relax module compiled for the host CPU; ``run(name, *arrays)`` returns numpy arrays."""

    def __init__(self, mod: tvm.IRModule) -> None:
        with tvm.transform.PassContext(opt_level=3):
            executable = tvm.compile(mod, target="llvm")
        self._vm = relax.VirtualMachine(executable, tvm.cpu())

    def run(self, name: str, *arrays: np.ndarray) -> np.ndarray | list[np.ndarray]:
        result = self._vm[name](*(tvm.runtime.tensor(np.ascontiguousarray(a)) for a in arrays))
        return _to_numpy(result)


def _to_numpy(value):
    if hasattr(value, "numpy"):
        return value.numpy()
    return [_to_numpy(v) for v in value]
