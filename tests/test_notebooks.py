"""Every notebook under notebooks/ executes top to bottom on small inputs, shows at least one
figure inline, and computes what its text says (checks evaluated in its kernel afterwards)."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# notebook -> claims about its variables, each a Python expression that must be True
CHECKS = {
    "quickstart.ipynb": [
        "s['finished'] == s['requests'] == 2000",
        "0.95 <= s['slo_attainment'] <= 1",
        "abs(s['offered_rate_per_s'] - exp.trace.rate_per_s) < 1e-9",
        "0 < s['request_throughput_per_s'] <= s['offered_rate_per_s']",
        "0 < s['mfu_mean'] < s['mbu_mean'] <= 1",
        "s['nonidle_fraction_mean'] > 5 * s['mfu_mean']",
        "res.provenance['calibration'] == 'measured'",
        "0 < it.time_s < 0.1",
        "info['timeline_rows'] == len(res.timeline) and not info['cut']",
    ],
    "compare_policies.ipynb": [
        "len(cmp.results) == 3 and list(cmp.table.index) == "
        "[f'router.policy={r}' for r in routers]",
        "(cmp.frame.error == '').all() and (cmp.frame.slo_attainment >= 0.9).all()",
        "(cmp.frame.offered_rate_per_s.round(6) == 24).all()",
        "all(hw.frame.set_index('label').ttft_p50_s[f'instances.0.device={d}, "
        "cost.calibration=datasheet'] < hw.frame.set_index('label').ttft_p50_s["
        "f'instances.0.device={d}, cost.calibration=measured'] for d in "
        "('H100-SXM', 'A100-80GB'))",
    ],
    "capacity_planning.ipynb": [
        "len(sw.frame) == 12 and (sw.frame.error == '').all()",
        "(sw.frame.groupby('trace.rate_per_s').ttft_p90_s.apply(lambda g: g.iloc[1] <= "
        "g.iloc[0] * 1.05)).all()",
        "4 < cap.rate_per_s < cap.fails_at_per_s <= cap.rate_per_s * 1.03 + 1e-9",
        "cap.points.meets.any() and not cap.points.meets.all()",
        "ch.best is not None and ch.best['meets'] and ch.best['usd_per_hour'] == "
        "ch.candidates[ch.candidates.meets].usd_per_hour.min()",
    ],
    "hllm.ipynb": [
        "len(table) == 4 and set(table.config) == {'gpu_only', 'hllm', 'oblivious', '8480'}",
        "len(res.activity) > 0 and 0 <= ctl.idle_fraction() <= 1",
        "curve.ratio.iloc[0] > curve.ratio.iloc[-1]",
    ],
    "design_search.ipynb": [
        "s['evaluated'] == spec.n_init + spec.n_iter * spec.batch_size == 14",
        "s['feasible'] >= 2 and len(outcome.front) >= 2 and s['hypervolume'] > 0",
        "outcome.comparison.design.iloc[0] == 'H100 cluster'",
        "(outcome.comparison['capex_usd / baseline'].iloc[1:] < 1).all()",
        "{'llmshare', 'random', 'svr', 'dac16', 'boom-explorer'} <= set(runs.method)",
    ],
    "hels.ipynb": [
        "parts['hels'].feasible and not parts['equal'].feasible",
        "tpot[tpot.policy == 'hels'].tpot_s.max() < 0.1",
        "opt.table[('latency', 'tpot_p50_ms')]['instances.0.partition=hels'] < "
        "opt.table[('latency', 'tpot_p50_ms')]['instances.0.partition=equal']",
    ],
}

# notebooks that need an optional extra: skipped (named) where it is not installed
NEEDS = {"design_search.ipynb": ("botorch", "simcluster[search]")}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"
    assert {p.name for p in NOTEBOOKS} == set(CHECKS), "every notebook has its checks"


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells
               if cell.cell_type == "code" for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes_shows_figures_and_computes_what_it_says(path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    if path.name in NEEDS:
        module, extra = NEEDS[path.name]
        pytest.importorskip(module, reason=f"{path.name} needs pip install '{extra}'")
    nb = nbformat.read(path, as_version=4)
    assert not any("matplotlib.use(" in c.source for c in nb.cells), "figures must show inline"
    assert any("import simcluster as sc" in c.source for c in nb.cells)
    checks = CHECKS[path.name]
    probe = ("import json as _json\nprint('CHECKS' + _json.dumps({_c: bool(eval(_c)) for _c in "
             f"{checks!r}}}))")
    nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    assert _images(nb) >= 1, f"{path.name} produced no image"
    text = "".join(o.get("text", "") for o in nb.cells[-1].outputs if o.output_type == "stream")
    results = json.loads(text.split("CHECKS", 1)[1])
    failed = [c for c, ok in results.items() if not ok]
    assert not failed, f"{path.name}: false: {failed}"
