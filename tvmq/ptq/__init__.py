"""Post-training quantization algorithms, composed by ``QuantConfig.ptq``.

Each algorithm is one module with one signature, ``step(state: PTQState, options: dict) -> PTQState``, registered
under its name with its pipeline stage (the seed study's order):

* pre-processing: ``cle`` (cross-layer equalisation with bias absorption);
* initialisation: ``minmax_init``, ``mse_init``, ``percentile_init`` (weight and activation observers);
* optimisation: ``adaround`` (opt_round), ``adaquant`` (opt_weights), ``lsq`` (opt_qparam), layer-wise or block-wise
  (``"adaround:block"``, BRECQ, with QDrop); ``bitsplit`` (opt_bits) and ``gptq``, layer-wise;
* post-processing: ``bias_correction`` (empirical, per output channel), ``bias_tuning`` (end to end).

``tvmq.quantize`` runs the list between calibration and the plan; ``run_pipeline`` runs it alone. ``mixed.search``
(``tvmq.mixed_precision``) picks per-layer bits under a flash, arena or BOPs budget.
"""

from . import adaquant, adaround, bias_correction, bias_tuning, bitsplit, cle, gptq, init, lsq  # noqa: F401
from .pipeline import check_samples, run_pipeline
from .registry import REGISTRY, check_pipeline, known
from .state import PTQState

__all__ = ["REGISTRY", "PTQState", "check_pipeline", "check_samples", "known", "run_pipeline"]
