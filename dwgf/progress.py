"""Progress of ``dwgf predict``: the batch (i of n) and the solver's iteration (k of K), with an ETA."""

from __future__ import annotations

import sys
import time
from typing import Any, Optional, TextIO

from lightning.pytorch.callbacks import ProgressBar


def _clock(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


class FlowProgressBar(ProgressBar):
    """Shows the batch and the solver's iteration during ``predict``, with the time left.

    On a terminal one line is redrawn (at most every ``refresh_seconds``)::

        predict: batch 1/2 | iteration 37/200 | 3.1 it/s | ETA batch 0:00:52, all 0:02:56

    When the output is not a terminal (a log file, CI) it prints plain lines instead: one at least every
    ``log_seconds`` during a batch, and one at its end::

        predict: batch 1/2: 50 items, iteration 120/200 (1.95 it/s); ETA batch 0:00:41, all 0:02:23
        predict: batch 1/2: 50 items, 200 iterations in 64.1 s (3.12 it/s); ETA 0:01:04

    The ETA assumes the remaining iterations cost what the finished ones did. Solvers report
    their iterations through :meth:`dwgf.solver.InverseSolver.report_iteration`. Only the first
    process prints (under several processes it shows its own share of the batches).

    Args:
        refresh_seconds: least time between two redraws on a terminal. Default 0.5.
        stream: where to write. Default ``sys.stderr``.
        interactive: redraw one line (``True``) or print plain lines (``False``).
            Default: whether ``stream`` is a terminal.
        log_seconds: with plain lines, the longest time between two during a batch. Default 60.
    """

    def __init__(self, refresh_seconds: float = 0.5, stream: Optional[TextIO] = None, interactive: Optional[bool] = None,
                 log_seconds: float = 60.0):
        super().__init__()
        self.refresh_seconds = float(refresh_seconds)
        self.log_seconds = float(log_seconds)
        self._stream = stream
        self._interactive = interactive
        self._enabled = True
        self._reset()

    def _reset(self) -> None:
        self._start = self._batch_start = self._last_draw = 0.0
        self._batch = self._batches = 0
        self._k = self._K = 0
        self._done = 0  # iterations finished in earlier batches
        self._in_batch = False
        self._items = None
        self._width = 0

    # -- ProgressBar interface -------------------------------------------------------------------
    def disable(self) -> None:
        self._enabled = False

    def enable(self) -> None:
        self._enabled = True

    @property
    def stream(self) -> TextIO:
        return self._stream if self._stream is not None else sys.stderr

    @property
    def interactive(self) -> bool:
        if self._interactive is not None:
            return self._interactive
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    def _active(self, trainer) -> bool:
        return self._enabled and trainer.is_global_zero

    def on_predict_start(self, trainer, pl_module) -> None:
        self._reset()
        self._start = time.perf_counter()
        self._batches = int(sum(trainer.num_predict_batches))

    def on_predict_batch_start(self, trainer, pl_module, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        self._batch = batch_idx + 1
        self._batch_start = time.perf_counter()
        self._k = 0
        self._in_batch = True
        self._items = len(batch["name"]) if isinstance(batch, dict) and "name" in batch else None

    def on_solver_iteration(self, trainer, pl_module, k: int, num: int) -> None:
        self._k, self._K = k + 1, num
        if not self._active(trainer):
            return
        now = time.perf_counter()
        if not self.interactive:  # a log file: a line at least every log_seconds, so that a long batch is not silent
            if now - max(self._last_draw, self._batch_start) >= self.log_seconds and self._k < self._K:
                self._last_draw = now
                took = now - self._batch_start
                items = f"{self._items} items, " if self._items is not None else ""
                print(f"predict: batch {self._batch}/{self._batches}: {items}iteration {self._k}/{self._K} ({self._k / took:.2f} it/s); "
                      f"ETA batch {_clock(took / self._k * (self._K - self._k))}, all {_clock(self._eta(now))}", file=self.stream, flush=True)
            return
        if now - self._last_draw >= self.refresh_seconds or self._k == self._K:
            self._last_draw = now
            self._draw(self._line(now))

    def on_predict_batch_end(self, trainer, pl_module, outputs: Any, batch: Any, batch_idx: int, dataloader_idx: int = 0) -> None:
        now = time.perf_counter()
        self._done += self._k
        self._in_batch = False
        if not self._active(trainer) or self._items == 0:  # the empty batch of a process with nothing to do
            return
        if self.interactive:
            self._draw(self._line(now))
            return
        took = now - self._batch_start
        items = f"{self._items} items, " if self._items is not None else ""
        rate = f" ({self._k / took:.2f} it/s)" if self._k and took > 0 else ""
        line = f"predict: batch {self._batch}/{self._batches}: {items}{self._k} iterations in {took:.1f} s{rate}"
        if self._batch < self._batches:
            line += f"; ETA {_clock(self._eta(now))}"
        print(line, file=self.stream, flush=True)

    def on_predict_end(self, trainer, pl_module) -> None:
        if self._active(trainer) and self.interactive and self._width:
            print(file=self.stream, flush=True)  # keep the last drawn line

    # -- text ------------------------------------------------------------------------------------
    def _eta(self, now: float) -> float:
        """Seconds left for all batches, at the average wall time per iteration so far."""
        done = self._done + (self._k if self._in_batch else 0)
        if done == 0 or self._K == 0:
            return 0.0
        left = (self._K - self._k if self._in_batch else 0) + (self._batches - self._batch) * self._K
        return (now - self._start) / done * left

    def _line(self, now: float) -> str:
        took = now - self._batch_start
        rate = f"{self._k / took:.1f} it/s" if took > 0 and self._k else "- it/s"
        per_iteration = took / self._k if self._k else 0.0
        eta_batch = per_iteration * (self._K - self._k)
        return (f"predict: batch {self._batch}/{self._batches} | iteration {self._k}/{self._K} | {rate} | "
                f"ETA batch {_clock(eta_batch)}, all {_clock(self._eta(now))}")

    def _draw(self, line: str) -> None:
        pad = max(0, self._width - len(line))
        self._width = len(line)
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
