"""Post-training quantization algorithms, composed by ``QuantConfig.ptq``.

Each algorithm is one module with one signature, ``step(state: PTQState, options: dict) -> PTQState``, registered
under its name with its pipeline stage (the seed study's order):

* pre-processing: ``cle`` (cross-layer equalisation with bias absorption);
* initialisation: ``minmax_init``, ``mse_init``, ``percentile_init`` (weight and activation observers);
* optimisation (integer weights, layer-wise): ``adaround``, ``gptq``, ``adaquant``;
* post-processing: ``bias_correction`` (empirical, per output channel).

``tvmq.quantize`` runs the list between calibration and the plan; ``run_pipeline`` runs it alone.
"""

from . import adaquant, adaround, bias_correction, cle, gptq, init  # noqa: F401 (register the algorithms)
from .pipeline import check_samples, run_pipeline
from .registry import REGISTRY, check_pipeline, known
from .state import PTQState

__all__ = ["REGISTRY", "PTQState", "check_pipeline", "check_samples", "known", "run_pipeline"]
