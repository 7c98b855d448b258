"""Quantized model -> one standalone C library for a Cortex-M core (kernels, AOT call sequence, memory plan)."""

from .artifact import Artifact, build
from .planner import MemoryPlan, plan_memory

__all__ = ["Artifact", "MemoryPlan", "build", "plan_memory"]
