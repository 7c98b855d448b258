"""Shared fixtures: quantized example models are built once per session (each takes a few seconds)."""

from __future__ import annotations

import pytest

import tvmq


@pytest.fixture(scope="session")
def digits():
    return tvmq.examples.load("digits")


@pytest.fixture(scope="session")
def basicmotions():
    return tvmq.examples.load("basicmotions")


@pytest.fixture(scope="session")
def digits_int8(digits):
    return tvmq.quantize(digits.model_path, digits.calibration, progress=False)
