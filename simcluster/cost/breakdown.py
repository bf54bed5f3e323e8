"""Inspection of an :class:`~.model.IterationTimer`: one row per operator of an iteration
(per stage and rank, link operators, host dispatch), the table ``simcluster explain`` and the
notebooks print. A mixin of the timer, kept apart so that modules stay short; not on the hot
path.
"""

from __future__ import annotations

import numpy as np


class Breakdown:
    """The per-operator rows of :class:`~.model.IterationTimer` (the timer holds the parts)."""

    def breakdown(self, batch) -> list[dict]:
        """One row per operator per stage and rank, plus link operators (rank -1)."""
        rows = []
        chunks = np.array(batch.prefill_tokens)
        ctx = np.array(batch.prefill_context)
        n_dec, ctx_sum = len(batch.decode_context), sum(batch.decode_context)
        for s in range(self.layout.pp):
            for r, rs in enumerate(self.ranks):
                dev = self._device(s, r)
                ops = list(self._dense_ops(s, r, batch.tokens, batch.samples))
                if len(chunks) and rs.heads:
                    f, by = rs.attn_prefill(chunks, ctx)
                    ops += [("attn_prefill", "attention", self.stage_layers[s], f, by,
                             {"tokens": chunks, "context": ctx, "batch": len(chunks),
                              "heads": rs.heads, "kv_heads": rs.kv_heads})]
                if n_dec:
                    f, by = rs.attn_decode(n_dec, ctx_sum)
                    if f:
                        ops += [("attn_decode", "attention", self.stage_layers[s], f, by,
                                 {"batch": n_dec, "kv_len": ctx_sum / n_dec, "heads": rs.heads,
                                  "kv_heads": rs.kv_heads})]
                    if f and rs.recompute:
                        ops += [("gemm", "kv_recompute", self.stage_layers[s],
                                 *self._recompute_op(rs, float(ctx_sum)))]
                start = len(rows)
                for op, name, c, f, by, shp in ops:
                    t = float(np.sum(self.cal.op_time(dev, op, f, by, shp, self.dtype)))
                    rows.append({"stage": s, "rank": r, "device": dev.name, "op": op,
                                 "name": name, "count": c, "flops": c * float(np.sum(f)),
                                 "bytes": c * float(np.sum(by)), "time_s": c * t})
                kv = (self._kv_concat(s, r, float(np.sum(chunks + ctx))) if len(chunks) else 0.0) \
                    + (self._kv_concat(s, r, float(ctx_sum)) if n_dec else 0.0)
                if kv:
                    rows.append({"stage": s, "rank": r, "device": dev.name, "op": "elementwise",
                                 "name": "kv_concat", "count": self.stage_layers[s],
                                 "flops": 0.0, "bytes": float("nan"),
                                 "time_s": self.stage_layers[s] * kv})
                rows += self._host_rows(s, r, dev, rows[start:], batch)
        for name, c, t in self._link_ops(batch.tokens, n_dec):
            op = "collective" if name in ("tp_allreduce", "ep_allgather") else "transfer"
            rows.append({"stage": -1, "rank": -1, "device": "link", "op": op, "name": name,
                         "count": c, "flops": 0.0, "bytes": float("nan"), "time_s": c * t})
        return rows

    def _host_rows(self, s, r, dev, dev_rows, batch) -> list[dict]:
        """In eager or piecewise execution, the host dispatch time not hidden under the
        device time (and the first launch's latency), as one ``host`` row."""
        prefill = bool(batch.prefill_tokens)
        mode = self.execution.of_kind(prefill)
        if mode == "graphs":
            return []
        device = sum(row["time_s"] for row in dev_rows)
        host = self._host.host(prefill, bool(batch.decode_context), batch.samples > 0, mode)
        extra = float(max(host[s, r] - device, 0.0) + self._host.latency())
        return [{"stage": s, "rank": r, "device": dev.name, "op": "host",
                 "name": f"launch_overhead ({mode})", "count": 1, "flops": 0.0,
                 "bytes": float("nan"), "time_s": extra}]
