"""Graph-level passes of tvmq, each an ``IRModule -> IRModule`` transform composable with Sequential.

import -> :mod:`normalize` (fold BatchNorm, channels-last layout, constants) -> :mod:`layers` (find the
quantizable layers) -> :mod:`calibrate` (expose layer outputs to observers) -> :mod:`realize` (integer ops as
``R.call_tir`` of PrimFuncs from ``tvmq.schedules``) / :mod:`simulate` (fake-quant float model).
"""

from .calibrate import ExposeTensors
from .layers import Layer, find_layers
from .normalize import FoldBatchNorm, normalize
from .realize import RealizeIntegerOps
from .simulate import InsertFakeQuant

__all__ = [
    "ExposeTensors",
    "FoldBatchNorm",
    "InsertFakeQuant",
    "Layer",
    "RealizeIntegerOps",
    "find_layers",
    "normalize",
]
