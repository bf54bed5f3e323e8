"""Model architectures as plain data, and the FLOPs and bytes of their operators.

:mod:`.spec` (what a model is), :mod:`.presets` (cited architectures), :mod:`.hf_config`
(reading a Hugging Face ``config.json``), :mod:`.operators` (per-rank operator accounting,
shared by the calibration fit and the cost model).
"""

from simcluster.models.hf_config import load_model, model_from_hf_config
from simcluster.models.presets import PRESETS, list_models, model_preset
from simcluster.models.spec import DTYPE_BYTES, ModelSpec, with_dtype

__all__ = ["DTYPE_BYTES", "PRESETS", "ModelSpec", "list_models", "load_model",
           "model_from_hf_config", "model_preset", "with_dtype"]
