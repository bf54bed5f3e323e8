"""Model architectures as plain data, and the FLOPs and bytes of their operators.

:mod:`.spec` (what a model is), :mod:`.presets` (cited architectures), :mod:`.hf_config`
(reading a Hugging Face ``config.json``), :mod:`.operators` (per-rank operator accounting,
shared by the calibration fit and the cost model).
"""

from simcluster.lazy import lazy_exports
from simcluster.models.presets import PRESETS, list_models, load_model, model_preset
from simcluster.models.spec import DTYPE_BYTES, ModelSpec, with_dtype

# (reading a config.json: imported when first read)
__getattr__, __dir__ = lazy_exports(globals(), {
    "model_from_hf_config": "simcluster.models.hf_config"})

__all__ = ["DTYPE_BYTES", "PRESETS", "ModelSpec", "list_models", "load_model",
           "model_from_hf_config", "model_preset", "with_dtype"]
