"""Auto-tuning of tvmq's kernels with MetaSchedule + XGBoost, measured in instructions on QEMU.

``tune(qmodel, target, board=..., trials=..., database=DIR)`` tunes every distinct kernel of a model and records
every measurement in MetaSchedule's JSON database in ``DIR``; ``schedule_from_database(DIR, target)`` is the
PrimFunc -> PrimFunc schedule ``tvmq.build(..., database=DIR)`` applies (best record per kernel, the default schedule
for kernels without one). See ``tune``, ``space``, ``measure`` and ``database`` for the design.
"""

from .database import schedule_from_database
from .tune import KernelResult, TuningReport, tune

__all__ = ["KernelResult", "TuningReport", "schedule_from_database", "tune"]
