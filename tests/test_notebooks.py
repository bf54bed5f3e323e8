"""Every notebook under notebooks/ executes top to bottom (small inputs), so none rots."""

import json
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

# notebook -> claims about its variables, each a Python expression that must be True, and
# that it shows a figure inline (the same form as the search layer's notebook checks)
CHECKS = {
    "design_search.ipynb": [
        "s['evaluated'] == spec.n_init + spec.n_iter * spec.batch_size == 14",
        "s['feasible'] >= 2 and len(outcome.front) >= 2 and s['hypervolume'] > 0",
        "outcome.comparison.design.iloc[0] == 'H100 cluster'",
        "(outcome.comparison['capex_usd / baseline'].iloc[1:] < 1).all()",
        "{'llmshare', 'random', 'svr', 'dac16', 'boom-explorer'} <= set(runs.method)",
    ],
}


def test_there_are_notebooks():
    assert NOTEBOOKS, "notebooks/ is empty"


def _images(nb) -> int:
    return sum("image/png" in out.get("data", {}) for cell in nb.cells
               if cell.cell_type == "code" for out in cell.get("outputs", []))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_executes(path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(path, as_version=4)
    checks = CHECKS.get(path.name)
    if checks:
        probe = ("import json as _json\nprint('CHECKS' + _json.dumps({_c: bool(eval(_c)) for "
                 f"_c in {checks!r}}}))")
        nb.cells.append(nbformat.v4.new_code_cell(probe))
    client = nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    if checks:
        assert _images(nb) >= 1, f"{path.name} produced no image"
        text = "".join(o.get("text", "") for o in nb.cells[-1].outputs
                       if o.output_type == "stream")
        results = json.loads(text.split("CHECKS", 1)[1])
        failed = [c for c, ok in results.items() if not ok]
        assert not failed, f"{path.name}: false: {failed}"
