"""The supported-operator check that every frontend runs before any import work starts."""

from __future__ import annotations

from collections.abc import Iterable

from ..errors import UnsupportedOpError


def raise_if_unsupported(model_format: str, found: Iterable[tuple[str, str]], supported: Iterable[str]) -> None:
    """Raise one error listing every unsupported (op type, node name) pair, or return if there is none.

    ``found`` holds every node of the model as ``(op_type, node_name)``; ``supported`` the op types tvmq handles.
    """
    allowed = set(supported)
    bad = [(op, name) for op, name in found if op not in allowed]
    if not bad:
        return
    lines = "\n".join(f"  - {op} (node '{name}')" for op, name in bad)
    kinds = ", ".join(sorted({op for op, _ in bad}))
    raise UnsupportedOpError(
        f"{model_format} model uses {len(bad)} node(s) tvmq cannot quantize (op types: {kinds}):\n{lines}\n"
        f"Supported {model_format} op types: {', '.join(sorted(allowed))}.\n"
        "Replace or remove these nodes (e.g. export the model without them) and try again."
    )
