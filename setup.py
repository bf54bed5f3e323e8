"""Build hook: the wheel carries the bundled data (hardware specs, engines, measured tables,
traces, experiments) under ``simcluster/_data/``.

The repository keeps one copy of each folder at its top level (``hwspecs/``, ``traces/``,
``experiments/``); ``simcluster.paths.data_dir`` finds them there in a source checkout or an
editable install, and under ``simcluster/_data/`` in an installed wheel, where this hook
copies them at build time. Everything else is in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
DATA = ("hwspecs", "traces", "experiments")
SKIP = shutil.ignore_patterns("__pycache__", "*.pyc", ".ipynb_checkpoints", ".DS_Store")


class build_py_with_data(build_py):
    """build_py, plus the top-level data folders copied into simcluster/_data/."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return          # an editable install reads the folders where they are
        for name in DATA:
            src = ROOT / name
            if not src.is_dir():
                raise SystemExit(f"cannot build simcluster: the data folder {src} is missing")
            dst = Path(self.build_lib) / "simcluster" / "_data" / name
            if dst.exists():
                shutil.rmtree(dst)
            shutil.copytree(src, dst, ignore=SKIP)


setup(cmdclass={"build_py": build_py_with_data})
