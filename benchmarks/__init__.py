"""dwgf's benchmarks: scripts that print the figures README quotes and write them, with the command
that produced them, under ``benchmarks/results``.

Run one as ``python benchmarks/<name>.py ...`` or ``python -m benchmarks.<name> ...``, from any
working directory. What the MNIST benchmarks share (tasks, digit splits, one ``dwgf predict`` run,
the cache of runs) is :mod:`benchmarks.harness`.

- ``quality.py``: every method on every MNIST task at an equal network budget: the one tuner
  (grids on the *tune* digits), the comparison and sweeps on the *report* digits, the task
  configs' report table, the method overlays under ``configs/methods``.
- ``mnist_tasks.py``: one config on one split, printed (a quick look).
- ``particle_spread.py``: particle error = error of the mean + spread, per run of the comparison.
- ``particle_hashes.py``: every particle's hash for the quickstart and each MNIST config (refactors).
- ``mnist_prior.py``: the shipped prior's reconstruction PSNR and samples.
- ``flow_speed.py``: one flow iteration against the cost of its network calls, and batch scaling.
"""
