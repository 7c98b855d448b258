"""The PTQ algorithm registry and the checks of a pipeline list.

Each algorithm registers under one name with its pipeline stage (the seed study's order: float pre-processing,
quantizer initialisation, quantization optimisation, low-precision post-processing), its options with their
defaults, and how many calibration samples it needs. ``QuantConfig.validate`` calls :func:`check_pipeline`, so a
bad list fails before any calibration work.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError

PREPROCESS, INIT, OPTIMIZE, POSTPROCESS = 1, 2, 3, 4
STAGE_NAMES = {PREPROCESS: "pre-processing", INIT: "initialisation", OPTIMIZE: "optimisation",
               POSTPROCESS: "post-processing"}  # fmt: skip
# Stages where two algorithms would overwrite each other's result (one initialiser, one set of integer weights).
EXCLUSIVE_STAGES = (INIT, OPTIMIZE)


@dataclass(frozen=True)
class Algorithm:
    """One registered PTQ step: ``run(state, options) -> state`` (see ``tvmq.ptq.state.PTQState``)."""

    name: str
    stage: int
    run: Callable[..., Any]
    options: dict[str, Any] = field(default_factory=dict)
    bounds: dict[str, tuple[float, float]] = field(default_factory=dict)  # inclusive ranges of numeric options
    # (layers, config, options) -> (samples needed, why); None when any non-empty calibration set will do
    min_samples: Callable[..., tuple[int, str]] | None = None
    check: Callable[..., None] | None = None  # (name, layers, config): raise ConfigError before any work


REGISTRY: dict[str, Algorithm] = {}
# The seed study's names for its optimisation variables (section 3.2), accepted wherever a name is.
ALIASES = {"opt_round": "adaround", "opt_weights": "adaquant", "opt_qparam": "lsq", "opt_bits": "bitsplit"}
# ``name:granularity`` in a pipeline list sets the algorithm's ``granularity`` option.
GRANULARITIES = ("layer", "block")


def resolve(entry: str) -> tuple[str, dict[str, Any]]:
    """``"adaround:block"`` -> ``("adaround", {"granularity": "block"})``; aliases to their algorithm. Raises
    ConfigError for an unknown name or granularity, or a granularity the algorithm does not have."""
    if not isinstance(entry, str):
        raise ConfigError(f"QuantConfig.ptq: algorithm names are strings, got {entry!r}")
    base, sep, granularity = entry.partition(":")
    name = ALIASES.get(base, base)
    if name not in REGISTRY:
        aliases = ", ".join(f"{a} (= {n})" for a, n in ALIASES.items())
        raise ConfigError(f"QuantConfig.ptq: unknown algorithm {base!r}; known algorithms: {', '.join(known())}; "
                          f"aliases: {aliases}")  # fmt: skip
    if not sep:
        return name, {}
    if granularity not in GRANULARITIES:
        raise ConfigError(f"QuantConfig.ptq: {entry!r}: granularity must be one of {list(GRANULARITIES)}")
    if "granularity" not in REGISTRY[name].options:
        raise ConfigError(f"QuantConfig.ptq: {entry!r}: {name} has no block-wise form "
                          f"({REGISTRY[name].run.__doc__.strip().splitlines()[0].rstrip('.')}); "
                          "block-wise reconstruction: adaround, adaquant, lsq")  # fmt: skip
    return name, {"granularity": granularity}


def register(name: str, stage: int, options: dict[str, Any] | None = None,
             bounds: dict[str, tuple[float, float]] | None = None,
             min_samples: Callable[..., tuple[int, str]] | None = None,
             check: Callable[..., None] | None = None) -> Callable:  # fmt: skip
    """Decorator adding a step function to the registry under ``name``."""

    def wrap(fn: Callable) -> Callable:
        REGISTRY[name] = Algorithm(name, stage, fn, dict(options or {}), dict(bounds or {}), min_samples, check)
        return fn

    return wrap


def known() -> list[str]:
    """Registered algorithm names in pipeline order."""
    return [a.name for a in sorted(REGISTRY.values(), key=lambda a: (a.stage, a.name))]


def check_pipeline(ptq: Any, options: Any) -> None:
    """Raise ConfigError if ``ptq`` is not an ordered list of known, compatible algorithms or ``options`` (a dict
    ``{algorithm: {option: value}}``) names an unknown algorithm or option, or gives a value of the wrong type."""
    if isinstance(ptq, str) or not isinstance(ptq, list | tuple):
        raise ConfigError(f"QuantConfig.ptq must be a list of algorithm names, e.g. ['cle', 'mse_init', "
                          f"'adaround'], got {ptq!r}")  # fmt: skip
    entries = list(ptq)
    ptq = [resolve(entry)[0] for entry in entries]
    dupes = sorted({n for n in ptq if ptq.count(n) > 1})
    if dupes:
        raise ConfigError(f"QuantConfig.ptq lists {dupes} more than once")
    stages = [REGISTRY[n].stage for n in ptq]
    for k in range(1, len(ptq)):
        if stages[k] < stages[k - 1]:
            raise ConfigError(
                f"QuantConfig.ptq: {entries[k]!r} ({STAGE_NAMES[stages[k]]}) must come before {entries[k - 1]!r} "
                f"({STAGE_NAMES[stages[k - 1]]}); the order is pre-processing, initialisation, optimisation, "
                "post-processing"
            )
    for stage in EXCLUSIVE_STAGES:
        chosen = [e for e, n in zip(entries, ptq, strict=True) if REGISTRY[n].stage == stage]
        if len(chosen) > 1:
            raise ConfigError(f"QuantConfig.ptq: {chosen} are alternative {STAGE_NAMES[stage]} algorithms "
                              "(each sets the same thing); choose one")  # fmt: skip
    _check_options(options)


def _check_options(options: Any) -> None:
    if not isinstance(options, dict):
        raise ConfigError(f"QuantConfig.ptq_options must be a dict {{algorithm: {{option: value}}}}, got {options!r}")
    for given_name, values in options.items():
        name = ALIASES.get(given_name, given_name)
        if name not in REGISTRY:
            raise ConfigError(f"QuantConfig.ptq_options: unknown algorithm {name!r}; known algorithms: "
                              f"{', '.join(known())}")  # fmt: skip
        if not isinstance(values, dict):
            raise ConfigError(f"QuantConfig.ptq_options['{name}'] must be a dict of options, got {values!r}")
        spec = REGISTRY[name].options
        for key, value in values.items():
            if key not in spec:
                allowed = ", ".join(f"{k}={v!r}" for k, v in spec.items()) or "none"
                raise ConfigError(f"QuantConfig.ptq_options['{name}'] has unknown option {key!r}; "
                                  f"its options (defaults): {allowed}")  # fmt: skip
            if not _same_type(value, spec[key]):
                raise ConfigError(f"QuantConfig.ptq_options['{name}']['{key}'] must be a "
                                  f"{type(spec[key]).__name__}, got {value!r}")  # fmt: skip
            low, high = REGISTRY[name].bounds.get(key, (-math.inf, math.inf))
            if not isinstance(value, bool) and isinstance(value, int | float) and not low <= value <= high:
                raise ConfigError(f"QuantConfig.ptq_options['{name}']['{key}'] must be in [{low}, {high}], "
                                  f"got {value!r}")  # fmt: skip


def _same_type(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, int | float)
    return isinstance(value, type(default))


def options_for(entry: str, config_options: dict) -> dict[str, Any]:
    """The algorithm's defaults, the config's values for it (under its name or alias) and the entry's
    granularity (``"adaround:block"``) applied."""
    name, suffix = resolve(entry)
    given = {**config_options.get(name, {}), **{k: v for a, n in ALIASES.items() if n == name
                                                 for k, v in config_options.get(a, {}).items()}}  # fmt: skip
    return {**REGISTRY[name].options, **given, **suffix}
