"""Per-item random draws: each item's numbers from its own generator, on the CPU or on the device.

A seed must mean the same particles on every machine. CUDA's generators (Philox) and the CPU's
(Mersenne Twister) give different numbers for one seed, so by default every item's generator lives
on the CPU and its draws are copied to the device (what diffusers recommends for reproducible
pipelines). Drawing on the CPU is not free at Stable Diffusion sizes (a 4 x 3 x 512 x 512 standard
normal is tens of milliseconds on one core), so :class:`ItemDraws` draws ahead: once an iteration
has made its draws, a side thread draws the same shapes again for the next iteration into pinned
memory while the device computes, and the copy to the device is asynchronous. Draws made ahead
that the next iteration does not ask for are given back: the generators are rewound, so the
numbers an item gets never depend on whether they were drawn ahead.

``generator="device"`` keeps the device's own generators instead: no host work at all, but other
particles than a CPU run of the same seed.
"""

from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Optional, Sequence

import torch

GENERATOR_PLACES = ("cpu", "device")


def item_generators(seeds: Sequence[int] | torch.Tensor, device: torch.device | str) -> list[torch.Generator]:
    """One generator per item on ``device``, seeded with the item's seed."""
    seeds = seeds.tolist() if isinstance(seeds, torch.Tensor) else list(seeds)
    return [torch.Generator(device=device).manual_seed(int(s)) for s in seeds]


def generator_device(place: str, device: torch.device | str) -> torch.device:
    """Where the generators of a solve on ``device`` live: ``place`` ``"cpu"`` or ``"device"`` (:data:`GENERATOR_PLACES`)."""
    if place not in GENERATOR_PLACES:
        raise ValueError(f"generator must be one of {', '.join(GENERATOR_PLACES)}; got {place!r}")
    return torch.device("cpu") if place == "cpu" else torch.device(device)


class ItemDraws:
    """Standard normal draws for a batch, each item's from its own generator.

    ``draw(shape)`` returns ``B x *shape`` on ``device``; row ``b`` comes from ``generators[b]``, so an
    item's random numbers do not depend on which items share its batch, or on the batch order, or
    (with CPU generators) on the device the flow runs on.

    Args:
        generators: one per item, all on one device (the CPU, or ``device``).
        device: where the draws are returned.
        ahead: draw the next iteration's numbers on a side thread (:meth:`next_iteration`). ``None``
            (default): when the generators are on the CPU and ``device`` is not.
    """

    def __init__(self, generators: Sequence[torch.Generator], device: torch.device | str, ahead: Optional[bool] = None):
        self._generators = list(generators)
        self.device = torch.device(device)
        places = {g.device for g in self._generators}
        if len(places) > 1:
            raise ValueError(f"ItemDraws: the generators are on several devices ({', '.join(sorted(map(str, places)))}); expected one")
        self.source = places.pop() if places else self.device
        self.ahead = (self.source.type == "cpu" and self.device.type != "cpu") if ahead is None else bool(ahead)
        self._pin = self.ahead and self.device.type == "cuda"
        self._asked: list[tuple[int, ...]] = []  # the shapes drawn since the last next_iteration()
        self._queue: deque[tuple[tuple[int, ...], Future]] = deque()  # draws made ahead, in order
        self._pool: Optional[ThreadPoolExecutor] = None
        self.served_ahead = 0  # draws that were ready when asked for (a measure of how well drawing ahead works)

    def __len__(self) -> int:
        return len(self._generators)

    @property
    def generators(self) -> list[torch.Generator]:
        """The items' generators, as if nothing had been drawn ahead (drawn-ahead numbers are given back first)."""
        self.settle()
        return self._generators

    def _draw(self, shape: tuple[int, ...]) -> torch.Tensor:
        noise = torch.stack([torch.randn(shape, generator=g, device=self.source) for g in self._generators])
        return noise.pin_memory() if self._pin else noise

    def _draw_ahead(self, shape: tuple[int, ...]) -> tuple[list[torch.Tensor], torch.Tensor]:
        states = [g.get_state() for g in self._generators]  # where to rewind to if this draw is not wanted
        return states, self._draw(shape)

    def __call__(self, shape: Sequence[int]) -> torch.Tensor:
        shape = tuple(int(s) for s in shape)
        self._asked.append(shape)
        if self._queue:
            if self._queue[0][0] == shape:
                _, noise = self._queue.popleft()[1].result()
                self.served_ahead += 1
                return noise.to(self.device, non_blocking=self._pin)
            self.settle()  # the iteration asks for something else than the last one did
        noise = self._draw(shape)
        return noise if noise.device == self.device else noise.to(self.device, non_blocking=self._pin)

    def next_iteration(self, more: bool = True) -> None:
        """Marks the end of an iteration. With ``ahead``, and ``more`` iterations to come, the shapes
        this iteration drew are drawn again on a side thread for the next one."""
        plan, self._asked = self._asked, []
        self.settle()
        if not (self.ahead and more and plan):
            return
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="dwgf-draws")
        for shape in plan:
            self._queue.append((shape, self._pool.submit(self._draw_ahead, shape)))

    def settle(self) -> None:
        """Gives back the draws made ahead and not used: waits for them and rewinds the generators."""
        if not self._queue:
            return
        results = [future.result() for _, future in self._queue]
        self._queue.clear()
        for g, state in zip(self._generators, results[0][0]):
            g.set_state(state)

    def close(self) -> None:
        """:meth:`settle`, then stops the side thread (a later draw starts a new one)."""
        self.settle()
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None
