"""The search methods: LLMShare, its ablations and its baselines, as (initialisation,
surrogate) pairs that one loop (:func:`~simcluster.search.design.loop.run_search`) runs.

A method's initialisation picks the first designs without a model; after that, a method with
a surrogate fits it to every design evaluated so far and takes, per iteration, the batch of
unevaluated candidates with the highest expected hypervolume improvement (EHVI, exact for two
objectives; a point-predicting surrogate gets its predicted hypervolume improvement, EHVI with
zero variance). A method without a surrogate keeps drawing from its initial sampler.

=====================  =========  ==========  ==================================================
method                 init       surrogate   what it stands for
=====================  =========  ==========  ==================================================
llmshare               mci        gp-dtk      LLMShare: MCI + deep tree kernel GP + EHVI
llmshare-matern        mci        gp-matern   ablation: Matern-ARD GP instead of the DTK
llmshare-random-init   random     gp-dtk      ablation: random initial designs instead of MCI
bo-matern              random     gp-matern   plain multi-objective BO (both ablations at once)
boom-explorer          microal    gp-mlp      ICCAD'21 BOOM-Explorer: clustered TED + deep
                                              kernel GP (MLP) + EHVI
svr                    random     svr         the source's SVR row
dac16                  lhs        adaboost    DAC'16: statistical sampling + AdaBoost learning
random                 random     --          uniform random designs
lhs                    lhs        --          one Latin hypercube over the whole budget
=====================  =========  ==========  ==================================================
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simcluster.errors import InputError
from simcluster.search.design import sampling

INITS = ("random", "lhs", "mci", "microal", "ted")


@dataclass(frozen=True)
class Method:
    """A search method: how it picks initial designs, and the surrogate that guides it."""

    name: str
    init: str
    surrogate: str | None
    description: str

    def __post_init__(self):
        if self.init not in INITS:
            raise InputError(f"unknown initialisation {self.init!r}; known: {list(INITS)}",
                             field=self.name)


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("llmshare", "mci", "gp-dtk", "MCI + deep-tree-kernel GP + EHVI (LLMShare)"),
    Method("llmshare-matern", "mci", "gp-matern", "ablation: MCI + Matern-ARD GP + EHVI"),
    Method("llmshare-random-init", "random", "gp-dtk", "ablation: random init + DTK GP + EHVI"),
    Method("bo-matern", "random", "gp-matern", "random init + Matern-ARD GP + EHVI"),
    Method("boom-explorer", "microal", "gp-mlp",
           "BOOM-Explorer-like: clustered TED + MLP deep-kernel GP + EHVI (ICCAD'21)"),
    Method("svr", "random", "svr", "random init + SVR, predicted hypervolume improvement"),
    Method("dac16", "lhs", "adaboost",
           "Latin-hypercube sampling + AdaBoost trees, predicted HVI (DAC'16-like)"),
    Method("random", "random", None, "uniform random designs"),
    Method("lhs", "lhs", None, "one Latin hypercube over the whole budget"),
)}


def get_method(name: str | Method) -> Method:
    """A method by name (or a :class:`Method` as is); an unknown name lists the known ones."""
    if isinstance(name, Method):
        return name
    if name not in METHODS:
        raise InputError(f"unknown search method {name!r}; known: {sorted(METHODS)}",
                         field="method")
    return METHODS[name]


def initial_designs(init: str, x: np.ndarray, k: int, rng: np.random.Generator, *,
                    memory: np.ndarray | None = None, groups: int = 5, exclude=None):
    """``k`` candidate indices by the named initialisation, and MCI's bins (else None)."""
    if init == "random":
        return sampling.random_sample(x, k, rng, exclude), None
    if init == "lhs":
        return sampling.latin_hypercube(x, k, rng, exclude), None
    if init == "ted":
        return sampling.ted(x, k, exclude), None
    if init == "microal":
        return sampling.cluster_ted(x, k, groups, rng, exclude), None
    if init == "mci":
        if memory is None:
            raise InputError("memory-centric initialisation needs each design's total memory "
                             "(the design space's memory terms)")
        return sampling.mci(x, memory, k, groups, exclude)
    raise InputError(f"unknown initialisation {init!r}; known: {list(INITS)}")
