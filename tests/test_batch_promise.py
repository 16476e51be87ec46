"""The batch promise, exactly as docs/running.md ("What is reproducible") states it.

- The same batch composition (the same inputs, ``--data.batch_size`` and seed, on one kind of CPU with one thread
  count) gives bit-identical particles, however many processes or nodes share the work and across a resume
  (tests/test_processes.py and tests/test_outputs.py check the files; here the solver twice in one process).
- Another batch composition (an item alone, or in a batch of another size) gives the same particles within float
  rounding, not bit for bit: a matrix product (``torch.nn.Linear``: the networks' time embeddings, attention
  projections, text encoders) may sum in an order that depends on how many rows share the call (one row and several
  take different kernels on every CPU measured; on CPUs with AMX oneDNN's differ too), while each item's random
  draws and norms are its own. The tolerance the tests use:
  ``ACROSS_BATCHES_ATOL`` on particles in ``[-1, 1]`` units, one 8-bit level on written PNGs.
"""

from __future__ import annotations

import torch

from dwgf.operators import BoxInpainting
from dwgf.solver import DWGF

ACROSS_BATCHES_ATOL = 1e-4


def test_a_linear_layer_on_one_row_agrees_with_it_on_several_within_the_tolerance():
    """Shows that the row count changes a matrix product's rounding (measured: 1.3e-6 at most on an AMD EPYC without AMX,
    where one row takes a matrix-vector kernel and twelve a matrix-matrix one): far below the promise's tolerance."""
    torch.manual_seed(0)
    layer = torch.nn.Linear(320, 1280)
    x = torch.randn(12, 320)
    with torch.no_grad():
        many, one = layer(x), torch.cat([layer(row[None]) for row in x])
    torch.testing.assert_close(one, many, rtol=0, atol=ACROSS_BATCHES_ATOL / 10)


def test_the_same_batch_twice_gives_the_same_bits_and_an_item_alone_the_same_within_the_tolerance(ldm_prior):
    op = BoxInpainting(size=[10, 10], sigma_y=0.01)
    x = torch.rand(3, ldm_prior.image_channels, ldm_prior.image_size, ldm_prior.image_size, generator=torch.Generator().manual_seed(3))
    y, params = op.measure(x * 2 - 1, seeds=[0, 1, 2])
    solver = DWGF(ldm_prior, num_steps=3, num_particles=2).set_operator(op)
    first, second = solver.solve(y, params, [5, 6, 7]), solver.solve(y, params, [5, 6, 7])
    assert torch.equal(first, second)
    alone = solver.solve(y[2:], {k: v[2:] for k, v in params.items()}, [7])
    torch.testing.assert_close(alone[0], first[2], rtol=0, atol=ACROSS_BATCHES_ATOL)
