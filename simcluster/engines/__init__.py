"""Serving-engine models: what a real engine adds to the kernels, stored as data.

An engine spec (``hwspecs/engines/<name>.toml``) holds an engine model — the overhead terms of
:mod:`simcluster.engines.model`, fitted by :mod:`simcluster.engines.fit` to per-iteration logs
of the engine on one device serving one model — and the scheduling settings the engine ran
with (a batching policy and its parameters), with the metadata of the measurement.

    spec = load_engine("hf-cb-h100")
    cost = EngineCostModel.of(spec)        # or [cost] engine = "hf-cb-h100" in an experiment
    InstanceSpec(layout, InstanceConfig(**spec.scheduler), batching=spec.batching,
                 batching_params=spec.batching_params)
"""

from simcluster.lazy import lazy_exports

# (imported when first read: a simulation without an engine model reads only .envelope)
__getattr__, __dir__ = lazy_exports(globals(), {
    **dict.fromkeys(("BASE_TERMS", "KINDS", "TERMS", "EngineCostModel", "EngineTerms",
                     "EngineTimer"), "simcluster.engines.model"),
    **dict.fromkeys(("EngineSpec", "engine_toml", "engines_dir", "list_engines",
                     "load_engine"), "simcluster.engines.spec"),
})

__all__ = ["BASE_TERMS", "KINDS", "EngineCostModel", "EngineSpec", "EngineTerms", "EngineTimer",
           "TERMS",
           "engine_toml", "engines_dir", "list_engines", "load_engine"]
