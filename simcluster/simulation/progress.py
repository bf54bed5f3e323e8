"""Progress over a long run's arrivals: a tqdm bar (``tqdm.auto``: a widget in Jupyter, text
on a terminal) with rate and ETA, shown once the run has taken ``delay_s``."""

from __future__ import annotations


import warnings


def auto_tqdm():
    """``tqdm.auto.tqdm`` (a widget in Jupyter with ipywidgets, else text), without the warning
    tqdm gives in a notebook lacking ipywidgets (it falls back to text bars)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from tqdm.auto import tqdm
    return tqdm


class _ArrivalsBar:
    """A ``progress(arrived, total)`` callback drawing a tqdm bar; :meth:`close` ends it."""

    def __init__(self, total: int, desc: str = "", delay_s: float = 2.0, **tqdm_kw):
        tqdm = auto_tqdm()
        self.bar = tqdm(total=total, desc=desc or "arrivals", unit="req", delay=delay_s,
                        dynamic_ncols=True, **tqdm_kw)

    def __call__(self, done: int, total: int):
        self.bar.update(done - self.bar.n)

    def close(self):
        self.bar.close()


def arrivals_bar(total: int, desc: str = "", **kw) -> _ArrivalsBar:
    return _ArrivalsBar(total, desc, **kw)
