"""Progress bars: one function makes them all, and one rule decides how they show.

- ``widgets``: a kernel started by a Jupyter server (JupyterLab, Notebook: ``JPY_SESSION_NAME`` is set) with
  ipywidgets installed: tqdm's widget bar, redrawn in place.
- ``log``: any other kernel (papermill, ``splitreason run``, nbclient): no bar at all; a log line when another
  tenth of the loop is done (or, without a total, another ``LOG_EVERY_S``) and at least ``LOG_EVERY_S`` seconds
  after the last one, and one when the loop ends: an executed notebook keeps at most a dozen lines per loop, not
  thousands of redraws (tqdm's text bar writes each redraw as a new stderr output there).
- ``text``: outside a kernel (a terminal, a script): tqdm's text bar on stderr.
- ``off``: nothing.
``SPLITREASON_PROGRESS=widgets|log|text|off`` overrides the rule (``splitreason run`` sets ``log`` for its
kernels). ``setup(enabled)`` at the start of a notebook quiets the bars of transformers, datasets and the hub
client where they would not be widgets (or when ``progress`` is off). Library code makes its bars with
``progress_bar(..., disable=not progress)``, exactly as with ``tqdm``.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from typing import Any, Literal

from tqdm.std import tqdm as text_tqdm

log = logging.getLogger(__name__)

ENV = "SPLITREASON_PROGRESS"
Mode = Literal["widgets", "log", "text", "off"]
MODES: tuple[str, ...] = ("widgets", "log", "text", "off")
LOG_EVERY_S = 30.0
LOG_STEPS = 10  # a log bar's lines: at most one per tenth of its total
# what quiets the libraries' own bars, read when each library is first imported
LIBRARY_ENV = ("HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS")


def mode() -> Mode:
    """How bars show in this process (see the module docstring); ``$SPLITREASON_PROGRESS`` decides when set."""
    chosen = os.environ.get(ENV, "").strip().lower()
    if chosen:
        if chosen not in MODES:
            raise ValueError(f"{ENV}={chosen!r}: expected one of {', '.join(MODES)} (or unset: chosen per process)")
        return chosen  # type: ignore[return-value]
    if not _in_kernel():
        return "text"
    return "widgets" if os.environ.get("JPY_SESSION_NAME") and _has_widgets() else "log"


def draws(enabled: bool = True) -> bool:
    """Whether a bar is drawn (widget or text): what libraries with their own bars (HF Trainer) should be told."""
    return enabled and mode() in ("widgets", "text")


def progress_bar(iterable: Any = None, *args: Any, **kwargs: Any) -> Any:
    """A tqdm bar (same arguments) in this process's mode: widget, text, or a few log lines."""
    chosen = mode()
    if chosen == "off":
        kwargs["disable"] = True
    if chosen == "widgets":
        from tqdm.notebook import tqdm as widget_tqdm

        return widget_tqdm(iterable, *args, **kwargs)
    if chosen == "log":
        return LogBar(iterable, *args, **kwargs)
    return text_tqdm(iterable, *args, **kwargs)


def setup(enabled: bool = True) -> Mode:
    """At a notebook's start: quiet transformers', datasets' and the hub client's own bars unless they show as
    widgets (and always when ``enabled`` is False). Returns the mode."""
    chosen = mode()
    if enabled and chosen == "widgets":
        return chosen
    for name in LIBRARY_ENV:
        os.environ.setdefault(name, "1")
    if "transformers" in sys.modules:
        import transformers.utils.logging as hf_logging

        hf_logging.disable_progress_bar()
    if "datasets" in sys.modules:
        import datasets.utils

        datasets.utils.disable_progress_bars()
    if "huggingface_hub" in sys.modules:
        import huggingface_hub.utils

        huggingface_hub.utils.disable_progress_bars()
    return chosen


class LogBar(text_tqdm):
    """A tqdm that draws nothing: it logs ``desc: n/total (pct) in elapsed, ~left`` when another tenth is done
    (without a total: when it advanced), at most every ``every_s`` seconds, and once when it closes."""

    def __init__(self, *args: Any, every_s: float = LOG_EVERY_S, **kwargs: Any) -> None:
        self._every_s, self._last_line, self._last_step, self._ended = every_s, time.monotonic(), 0, False
        kwargs.setdefault("mininterval", 1.0)
        kwargs["file"] = _Discard()
        super().__init__(*args, **kwargs)

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if not self._ended and self._step() > self._last_step and time.monotonic() - self._last_line >= self._every_s:
            self._log()
        return True

    def close(self) -> None:
        if not self.disable and not self._ended:
            self._ended = True
            self._log(final=True)
        super().close()

    def _step(self) -> int:
        """Tenths done (without a total: items done)."""
        return int(LOG_STEPS * self.n / self.total) if self.total else self.n

    def _log(self, final: bool = False) -> None:
        self._last_line, self._last_step = time.monotonic(), self._step()
        log.info("%s", self.line(final))

    def line(self, final: bool = False) -> str:
        """``desc: n/total (pct) in elapsed, ~left`` (no estimate when ``final``): the bar's state in words."""
        d = self.format_dict
        n, total, elapsed = d["n"], d["total"], d["elapsed"]
        done = f"{n:,}/{total:,} ({n / total:.0%})" if total else f"{n:,}"
        text = f"{d['prefix'] or 'progress'}: {done} {d['unit']} in {self.format_interval(elapsed)}"
        if not final and total and 0 < n < total and elapsed > 0:
            text += f", ~{self.format_interval((total - n) * elapsed / n)} left"
        return text


class _Discard:
    """The file a LogBar 'draws' to."""

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        return None


def _in_kernel() -> bool:
    if "IPython" not in sys.modules:
        return False
    from IPython import get_ipython

    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _has_widgets() -> bool:
    try:
        import ipywidgets  # noqa: F401
    except ImportError:
        return False
    return True
