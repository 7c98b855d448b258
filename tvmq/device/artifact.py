"""Read an exported artifact directory (model.h, model.c, tvmq_runtime.h, metadata.json) and check its metadata.

Why check here: a malformed artifact must fail before a minute of compiling and emulating, with a message naming
the file and the field, not as a KeyError deep in the runner.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, TargetError
from ..target import Core, parse_target

REQUIRED_FILES = ("model.h", "model.c", "tvmq_runtime.h", "metadata.json")
_C_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class TensorSpec:
    """Shape and quantization of the model input or output (int8 codes)."""

    shape: tuple[int, ...]
    bytes: int
    scale: float | None
    zero_point: int | None


@dataclass(frozen=True)
class ArtifactInfo:
    """What the firmware builder and the runner need from an exported artifact."""

    directory: Path
    name: str
    core: Core
    input: TensorSpec
    output: TensorSpec
    steps: list[dict[str, Any]]
    metadata: dict[str, Any]


def load_artifact(directory: str | Path) -> ArtifactInfo:
    """Validate ``directory`` as an exported artifact and parse its metadata.json."""
    path = Path(directory)
    if not path.is_dir():
        raise ConfigError(f"artifact directory {str(path)!r} does not exist or is not a directory; pass the "
                          f"directory written by Artifact.export(), or the Artifact itself")  # fmt: skip
    missing = [f for f in REQUIRED_FILES if not (path / f).is_file()]
    if missing:
        raise ConfigError(f"artifact directory {str(path)!r} lacks {', '.join(missing)}; re-export it with "
                          f"Artifact.export()")  # fmt: skip
    meta_path = path / "metadata.json"
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{meta_path} is not valid JSON ({err}); re-export the artifact") from None
    if not isinstance(meta, dict):
        raise ConfigError(f"{meta_path} must hold a JSON object, got {type(meta).__name__}")
    where = str(meta_path)
    name = _field(meta, "name", str, where)
    if not _C_IDENTIFIER.fullmatch(name):
        raise ConfigError(f"{where}: name {name!r} is not a C identifier; the C functions are tvmq_<name>_run, ...")
    target = _field(meta, "target", dict, where)
    try:
        core = parse_target({"kind": "c", "mcpu": _field(target, "mcpu", str, f"{where} target")}).core
    except TargetError as err:
        raise TargetError(f"{where}: {err}") from None
    steps = _field(meta, "steps", list, where)
    for i, step in enumerate(steps):
        if not isinstance(step, dict) or not isinstance(step.get("name"), str):
            raise ConfigError(f"{where}: steps[{i}] must be an object with a 'name' (and 'op', 'macs')")
    return ArtifactInfo(path, name, core, _tensor(meta, "input", where), _tensor(meta, "output", where),
                        steps, meta)  # fmt: skip


def _field(obj: dict, key: str, kind: type, where: str) -> Any:
    if key not in obj:
        raise ConfigError(f"{where}: missing field {key!r}; re-export the artifact")
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise ConfigError(f"{where}: field {key!r} must be a {kind.__name__}, got {value!r}")
    return value


def _tensor(meta: dict, key: str, where: str) -> TensorSpec:
    spec = _field(meta, key, dict, where)
    here = f"{where} {key}"
    shape = _field(spec, "shape", list, here)
    if not shape or not all(isinstance(d, int) and not isinstance(d, bool) and d > 0 for d in shape):
        raise ConfigError(f"{here}: shape {shape!r} must be a list of positive integers")
    dtype = spec.get("dtype", "int8")
    if dtype != "int8":
        raise ConfigError(f"{here}: dtype {dtype!r} is not supported on the device; tvmq artifacts use int8")
    size = math.prod(shape)
    nbytes = spec.get("bytes", size)
    if nbytes != size:
        raise ConfigError(f"{here}: bytes {nbytes!r} does not match shape {shape} ({size} int8 values)")
    return TensorSpec(tuple(shape), size, spec.get("scale"), spec.get("zero_point"))
