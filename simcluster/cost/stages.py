"""Asymmetric pipeline stages (HexGen): each stage its own TP degree, devices and layer count.

A layout with ``stage_tp`` (:class:`~simcluster.cost.layout.Layout`) is timed stage by stage:
stage s is a one-stage layout of its devices (equal TP split) running ``layers[s]`` layers, the
first stage also the embedding and the last the LM head and sampling; the activations cross
each stage boundary on the stage link. As for equal stages (:mod:`simcluster.cost.model`), one
batch passes through the stages one after another per iteration: the iteration time is the sum
of the stages' times plus the hand-offs (no overlap of micro-batches across iterations).
"""

from __future__ import annotations

import numpy as np


class StagedTimer:
    """The iteration timer of an asymmetric-stage layout (see module docstring)."""

    def __init__(self, calibration, model, layout, stage_timer):
        """``stage_timer``: the one-stage timer class (the cost model's ``IterationTimer``)."""
        self.cal, self.model, self.layout = calibration, model, layout
        layers = layout.layers(model.num_layers)
        pp = layout.pp
        self.stages = [stage_timer(calibration, model, layout.stage_layout(s),
                                      layers=layers[s], first=s == 0, last=s == pp - 1)
                       for s in range(pp)]
        self.stage_layers = list(layers)
        self._link = layout.stage_link or layout.link
        if pp > 1 and self._link is None:
            raise ValueError("asymmetric stages need a stage_link (or link) for the hand-offs")

    def _handoff(self, tokens) -> float:
        if len(self.stages) == 1:
            return 0.0
        act = float(tokens * self.model.hidden_size * self.model.dtype_bytes)
        return (len(self.stages) - 1) * float(self.cal.link_time(self._link, "transfer", act))

    def time(self, prefill_tokens, prefill_context, n_decode, decode_context_sum, n_samples):
        tokens = int(np.sum(prefill_tokens)) + n_decode
        return sum(st.time(prefill_tokens, prefill_context, n_decode, decode_context_sum,
                           n_samples) for st in self.stages) + self._handoff(tokens)

    def decode_steps(self, n_decode, context_sum, steps):
        return sum(st.decode_steps(n_decode, context_sum, steps)
                   for st in self.stages) + self._handoff(n_decode)

    def breakdown(self, batch) -> list[dict]:
        """Each stage's operator rows (``stage`` numbered along the pipeline, ``rank`` within
        its stage), then the hand-offs (rank -1)."""
        rows = []
        for s, st in enumerate(self.stages):
            for row in st.breakdown(batch):
                if row["rank"] >= 0:
                    rows.append(dict(row, stage=s))
                elif row["time_s"]:
                    rows.append(dict(row, stage=-1, name=f"stage{s}_{row['name']}"))
        if len(self.stages) > 1:
            rows.append({"stage": -1, "rank": -1, "device": "link", "op": "transfer",
                         "name": "pp_handoff", "count": len(self.stages) - 1, "flops": 0.0,
                         "bytes": float("nan"), "time_s": self._handoff(batch.tokens)})
        return rows
