"""simcluster: a discrete-event simulator of LLM-serving clusters.

The public face, for scripts and notebooks (``import simcluster as sc``):

=====================  ==============================================================
data                   ``load_trace``, ``synthetic_trace``, ``Trace``, trace transforms;
                       ``load_device``, ``load_link``, ``load_node``; ``model_preset``,
                       ``load_model``
cost                   ``CostModel``, ``Layout``, ``Batch``, ``load_calibration``,
                       ``load_engine``
serving and cluster    ``InstanceConfig``, ``InstanceSpec``
one run                ``Simulation``, ``Results``
designs                ``AcceleratorDesign``, ``PoolDesign``, ``ServingDesign``,
                       ``parse_row``, ``designed_device``, ``evaluate_design``
experiments            ``load_experiment`` (with ``overrides``), ``Experiment``
questions              ``compare``, ``sweep``, ``sweep_file``, ``capacity``, ``cheapest``
pictures               ``plots`` (a module of functions returning Figures),
                       ``write_chrome_trace`` (a Perfetto/Chrome trace of a run)
=====================  ==============================================================

Names are imported on first use, so ``import simcluster`` stays light. The layers, bottom to
top (imports point down only; ``tests/test_layers.py`` checks it): ``errors``/``paths``;
data (``hardware``, ``models``, ``workload``); ``calibration``; ``cost``; ``engines``;
``policies``; ``serving``; ``cluster``; ``simulation``; ``analysis``; ``search``; shells
(``experiment``, ``cli``). ``harness`` (GPU measurement suites) is imported by the CLI only.
"""

from __future__ import annotations

from simcluster.lazy import lazy_exports as _lazy_exports

__version__ = "0.1.0"

_PUBLIC = {
    "load_trace": "simcluster.workload", "synthetic_trace": "simcluster.workload",
    "Trace": "simcluster.workload", "rescale_rate": "simcluster.workload",
    "time_window": "simcluster.workload", "first_n": "simcluster.workload",
    "subsample": "simcluster.workload", "describe": "simcluster.workload",
    "poisson_arrivals": "simcluster.workload", "gamma_arrivals": "simcluster.workload",
    "lognormal_lengths": "simcluster.workload", "resampled_lengths": "simcluster.workload",
    "fixed_lengths": "simcluster.workload",
    "shared_prefix_trace": "simcluster.workload", "conversation_trace": "simcluster.workload",
    "load_device": "simcluster.hardware", "load_link": "simcluster.hardware",
    "load_node": "simcluster.hardware", "DeviceSpec": "simcluster.hardware",
    "LinkSpec": "simcluster.hardware", "list_devices": "simcluster.hardware",
    "model_preset": "simcluster.models", "load_model": "simcluster.models",
    "ModelSpec": "simcluster.models", "list_models": "simcluster.models",
    "load_calibration": "simcluster.calibration",
    "CostModel": "simcluster.cost", "Layout": "simcluster.cost", "Batch": "simcluster.cost",
    "RoutingModel": "simcluster.cost",
    "load_engine": "simcluster.engines",
    "InstanceConfig": "simcluster.serving",
    "InstanceSpec": "simcluster.cluster",
    "Simulation": "simcluster.simulation", "Results": "simcluster.simulation",
    "load_experiment": "simcluster.experiment", "Experiment": "simcluster.experiment",
    "compare": "simcluster.experiment.study", "sweep": "simcluster.experiment.study",
    "sweep_file": "simcluster.experiment.study", "capacity": "simcluster.experiment.study",
    "cheapest": "simcluster.experiment.study",
    "write_chrome_trace": "simcluster.analysis.perfetto",
    "chrome_trace": "simcluster.analysis.perfetto",
    "InputError": "simcluster.errors",
    # LLMShare: parametric designs and their evaluation (docs/llmshare.md)
    "fit_context": "simcluster.workload",
    "AcceleratorDesign": "simcluster.hardware.parametric",
    "PoolDesign": "simcluster.hardware.parametric",
    "ServingDesign": "simcluster.hardware.parametric",
    "parse_row": "simcluster.hardware.parametric",
    "designed_device": "simcluster.hardware.designed",
    "evaluate_design": "simcluster.simulation.design",
}
_MODULES = {"plots": "simcluster.analysis.plots"}

__all__ = sorted(set(_PUBLIC) | set(_MODULES))


__getattr__, __dir__ = _lazy_exports(globals(), _PUBLIC, _MODULES)
