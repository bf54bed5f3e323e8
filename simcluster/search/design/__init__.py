"""Multi-objective search over hardware designs (LLMShare, DAC'25, part 2).

A design is a row of a discrete candidate table over a :class:`DesignSpace`'s parameters; an
evaluator maps designs to two minimised objectives (serving time, cost). :func:`run_search`
runs a method of :data:`METHODS` — LLMShare (memory-centric initialisation, a Gaussian process
with the deep tree kernel, exact EHVI), its ablations and its baselines — and returns every
evaluated design and the hypervolume per iteration. Modules, one decision each:

=================  ===============================================================
``space``          parameters, the configuration tree, design hashes, LLMShare's space
``metrics``        Pareto dominance, exact 2-D hypervolume, ADRS
``sampling``       random, Latin hypercube, TED, MCI (slides' Algorithm 1)
``acquisition``    exact two-objective EHVI, ranking of candidates
``surrogates``     surrogate registry (GP kernels, SVR, AdaBoost)
``gp``             the GPs on GPyTorch/BoTorch (optional extra ``simcluster[search]``)
``methods``        LLMShare, ablations and baselines as (initialisation, surrogate)
``evaluate``       cached evaluation on a process pool or Ray; answers from a table
``serving``        a design row simulated: :class:`ServingEvaluator` (issue 14's
                   ``evaluate_design`` on a trace and a model)
``loop``           one search: :func:`run_search`, :class:`SearchResult`
``session``        ``simcluster search SPACE.toml`` start to outputs
``report``         the front, the comparison with a baseline design, the figure
``synthetic``      an analytic stand-in for the simulator (tests, examples)
=================  ===============================================================

Torch is imported only when a GP is fitted: the rest needs numpy, scipy and pandas (and
scikit-learn for the SVR and AdaBoost baselines).
"""

from simcluster.search.design.evaluate import CachedEvaluator, TableEvaluator
from simcluster.search.design.loop import SearchResult, run_search
from simcluster.search.design.methods import METHODS, Method, get_method
from simcluster.search.design.metrics import (adrs, adrs_minmax, hypervolume_2d,
                                              pareto_front, pareto_mask)
from simcluster.search.design.serving import ServingEvaluator, serving_design
from simcluster.search.design.space import (DesignSpace, Parameter, TreeNode, design_hash,
                                            llmshare_space)

__all__ = ["CachedEvaluator", "DesignSpace", "METHODS", "Method", "Parameter", "SearchResult",
           "ServingEvaluator", "TableEvaluator", "TreeNode", "serving_design", "adrs", "adrs_minmax", "design_hash", "get_method",
           "hypervolume_2d", "llmshare_space", "pareto_front", "pareto_mask", "run_search"]
