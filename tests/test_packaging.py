"""An installed simcluster (not editable) carries its data: specs, tables, engines, traces,
experiments.

Copies the source tree to a temporary folder, installs it with ``pip install DIR`` (what
``pip install .`` does) and, separately, builds a wheel and installs that, each into a fresh
virtual environment (``--system-site-packages`` for numpy and friends: nothing is
downloaded), then runs the installed ``simcluster`` from an unrelated folder: ``list``
commands, a bundled experiment by name, and an experiment of that folder on a bundled trace
with the measured calibration and the bundled engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ("simcluster", "hwspecs", "traces", "experiments", "pyproject.toml", "setup.py",
          "MANIFEST.in", "README.md")

pytestmark = pytest.mark.slow

TINY = """
name = "installed"
[trace]
source = "azure-code"
first_n = 40
[model]
name = "llama-2-7b"
[[instances]]
device = "H100-SXM"
batching = "hf_cb"
[cost]
engine = "hf-cb-h100"
"""


def _copy_source(dst: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build")
    for name in SOURCE:
        src = ROOT / name
        (shutil.copytree(src, dst / name, ignore=ignore) if src.is_dir()
         else shutil.copy2(src, dst / name))
    return dst


def _env() -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "SIMCLUSTER_HWSPECS", "SIMCLUSTER_TRACES")}
    env["PIP_NO_INDEX"] = "1"            # never download: the build backend is installed
    return env


def _run(args, cwd, **kw):
    p = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, **kw)
    assert p.returncode == 0, f"{args}: exit {p.returncode}\n{p.stdout[-2000:]}\n{p.stderr[-3000:]}"
    return p.stdout


def _venv(path: Path) -> Path:
    # no pip of its own: the system pip and setuptools (site-packages) build and install
    _run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(path)],
         cwd=path.parent)
    return path / "bin"


def _check_installed(bin_: Path, elsewhere: Path) -> None:
    where = _run([str(bin_ / "python"), "-c", "import simcluster.paths as p; "
                  "print(p.data_dir('hwspecs'))"], cwd=elsewhere)
    assert "site-packages" in where and "_data" in where, where
    assert "H100-SXM" in _run([str(bin_ / "simcluster"), "list", "devices"], cwd=elsewhere)
    assert "hf-cb-h100" in _run([str(bin_ / "simcluster"), "list", "engines"], cwd=elsewhere)
    assert "azure-conv" in _run([str(bin_ / "simcluster"), "list", "traces"], cwd=elsewhere)
    out = _run([str(bin_ / "simcluster"), "run", "hels_llama2_13b", "--quiet"], cwd=elsewhere)
    assert "128 requests" in out
    (elsewhere / "tiny.toml").write_text(TINY)
    out = _run([str(bin_ / "simcluster"), "run", "tiny.toml", "--quiet", "--out", "res"],
               cwd=elsewhere)
    assert "40 requests" in out and (elsewhere / "res" / "summary.json").exists()


def test_pip_install_and_wheel_carry_the_data(tmp_path):
    src = _copy_source(tmp_path / "src")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    # pip install . (non-editable)
    bin_a = _venv(tmp_path / "venv-a")
    _run([str(bin_a / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install",
          "--no-deps", "--no-build-isolation", str(src)], cwd=tmp_path)
    _check_installed(bin_a, elsewhere)
    # a built wheel
    _run(pip + ["wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                str(src)], cwd=tmp_path)
    wheel = next((tmp_path / "dist").glob("simcluster-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for folder in ("hwspecs/devices", "hwspecs/links", "hwspecs/nodes", "hwspecs/calibration",
                   "hwspecs/engines", "traces", "experiments"):
        assert any(n.startswith(f"simcluster/_data/{folder}/") for n in names), folder
    bin_b = _venv(tmp_path / "venv-b")
    _run([str(bin_b / "python"), "-m", "pip", "--disable-pip-version-check", "-q", "install",
          "--no-deps", "--no-index", str(wheel)], cwd=tmp_path)
    shutil.rmtree(elsewhere)
    elsewhere.mkdir()
    _check_installed(bin_b, elsewhere)
