"""Runs ``dwgf`` with a pause at a chosen point, so that a test can kill it exactly there.

    python tests/pause_run.py POINT SENTINEL_DIR dwgf-arguments...

At POINT the process writes ``SENTINEL_DIR/<rank>.pid`` (its pid) and waits until a stop signal
arrives (or 120 s pass), then goes on as if nothing happened; the test sends SIGKILL or SIGTERM
when the file appears. Points:

- ``first-item``: the first solve has started, nothing is written yet;
- ``between-items``: the first batch is written, the second not started;
- ``during-write``: the second ``mean.png`` is written to its temporary name, not yet renamed;
- ``after-last-item``: every item is written, the end-of-run files are not.

Under DDP, Lightning relaunches this same script for the other ranks, so they pause too.
"""

import os
import sys
import time
from pathlib import Path

from dwgf import outputs, stopping
from dwgf.cli import main
from dwgf.solver import DWGF
from dwgf.writers import PredictionWriter

point, sentinels, args = sys.argv[1], Path(sys.argv[2]), sys.argv[3:]
rank = os.environ.get("LOCAL_RANK", "0")


def pause() -> None:
    sentinels.mkdir(parents=True, exist_ok=True)
    (sentinels / f"{rank}.pid").write_text(str(os.getpid()))
    deadline = time.monotonic() + 120
    while stopping.stop_requested() is None and time.monotonic() < deadline:
        time.sleep(0.02)


calls = {"solve": 0, "batch": 0, "mean": 0}

if point == "first-item":
    solve = DWGF.solve

    def paused_solve(self, *a, **k):
        calls["solve"] += 1
        if calls["solve"] == 1:
            pause()
        return solve(self, *a, **k)

    DWGF.solve = paused_solve
elif point == "between-items":
    write = PredictionWriter.write_on_batch_end

    def paused_write(self, *a, **k):
        write(self, *a, **k)
        calls["batch"] += 1
        if calls["batch"] == 1:
            pause()

    PredictionWriter.write_on_batch_end = paused_write
elif point == "during-write":
    replace = os.replace

    def paused_replace(src, dst, *a, **k):
        if Path(dst).name == "mean.png":
            calls["mean"] += 1
            if calls["mean"] == 2:
                pause()
        return replace(src, dst, *a, **k)

    outputs.os.replace = paused_replace
elif point == "after-last-item":
    end = PredictionWriter.on_predict_epoch_end

    def paused_end(self, *a, **k):
        pause()
        return end(self, *a, **k)

    PredictionWriter.on_predict_epoch_end = paused_end
else:
    raise SystemExit(f"unknown point {point}")

main(args)
