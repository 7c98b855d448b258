"""Validation of user-supplied sample data (calibration sets and inference inputs)."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from ..errors import CalibrationDataError

NPZ_KEYS = ("calibration", "x", "inputs", "data")


def as_samples(data: np.ndarray | Iterable[np.ndarray] | str | os.PathLike, input_shape: tuple[int, ...],
               what: str = "calibration data") -> np.ndarray:  # fmt: skip
    """Return ``data`` as a float32 array ``(N, *input_shape[1:])``, or raise naming what is wrong.

    Accepts one array (a batch, or a single sample of the model's input shape), an iterable of such arrays, or the
    path of an ``.npz`` file (its ``calibration``/``x``/``inputs``/``data`` array, or its only array).
    """
    if isinstance(data, str | os.PathLike):
        data = _load_npz(Path(data), what)
    if isinstance(data, np.ndarray):
        parts = [data]
    else:
        try:
            parts = list(data)
        except TypeError:
            raise CalibrationDataError(
                f"{what} must be a numpy array, an iterable of arrays or an .npz path, got {type(data).__name__}"
            ) from None
        if parts and not isinstance(parts[0], np.ndarray):
            parts = [np.asarray(p) for p in parts]
    sample_shape = tuple(input_shape[1:])
    batches = [_as_batch(np.asarray(p), sample_shape, input_shape, what, i) for i, p in enumerate(parts)]
    batches = [b for b in batches if b.shape[0] > 0]
    if not batches:
        raise CalibrationDataError(f"{what} is empty: give at least one sample of shape {sample_shape}")
    samples = np.concatenate(batches).astype(np.float32)
    finite = np.isfinite(samples).reshape(samples.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise CalibrationDataError(
            f"{what} holds NaN/Inf values in {bad.size} sample(s), first at index {int(bad[0])}; clean the data"
        )
    return samples


def _as_batch(part: np.ndarray, sample_shape: tuple, input_shape: tuple, what: str, index: int) -> np.ndarray:
    if part.dtype.kind != "f":
        raise CalibrationDataError(
            f"{what} (array {index}) has dtype {part.dtype}; expected floating-point values (float32) "
            "as the float model takes"
        )
    if part.shape == sample_shape:
        return part[None]
    if part.shape[1:] == sample_shape:
        return part
    if part.shape[1:] == tuple(input_shape):  # a stack of model-shaped (batch 1) inputs
        return part.reshape((part.shape[0], *sample_shape))
    raise CalibrationDataError(
        f"{what} (array {index}) has shape {part.shape}; expected (N, {', '.join(map(str, sample_shape))}) "
        f"for model input shape {tuple(input_shape)}"
    )


def _load_npz(path: Path, what: str) -> np.ndarray:
    if not path.is_file():
        raise CalibrationDataError(f"{what} file '{path}' does not exist")
    try:
        archive = np.load(path, allow_pickle=False)
    except Exception as err:
        raise CalibrationDataError(f"{what} file '{path}' is not a readable .npy/.npz file: {err}") from None
    if isinstance(archive, np.ndarray):
        return archive
    keys = list(archive.keys())
    for key in NPZ_KEYS:
        if key in keys:
            return archive[key]
    if len(keys) == 1:
        return archive[keys[0]]
    raise CalibrationDataError(f"{what} file '{path}' holds arrays {keys}; name the samples one of {list(NPZ_KEYS)}")
