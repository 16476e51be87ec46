"""Every tensor follows its input's device: checked over the package's source, not hoped.

A tensor factory in ``dwgf/`` (``torch.tensor``, ``zeros``, ``ones``, ``full``, ``arange``, ``linspace``,
``empty``, ``eye``, ``rand*``, ``Generator``) either names its ``device=``, or is a ``*_like`` of a
tensor, or carries a comment with the word "CPU" on its line or just above it saying why the CPU is
right there (data made in the loader, float64 tables cast where used, ...). A GPU run crashed on the
one factory that did none of these (``torch.quantile``'s ``q`` in :func:`dwgf.rendering.uncertainty_metrics`).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

import dwgf

PACKAGE = Path(dwgf.__file__).parent
FACTORIES = {"tensor", "as_tensor", "zeros", "ones", "full", "arange", "linspace", "logspace", "empty", "eye", "Generator"}


def is_factory(name: str) -> bool:
    return name in FACTORIES or (name.startswith("rand") and not name.endswith("_like"))


def factories_without_device(source: str) -> list[tuple[int, str]]:
    """``(line, call)`` of each tensor factory in ``source`` that names no device and has no CPU comment."""
    lines = source.splitlines()
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name)):
            continue
        if node.func.value.id != "torch" or not is_factory(node.func.attr) or any(k.arg == "device" for k in node.keywords):
            continue
        own = lines[node.lineno - 1 : node.end_lineno]
        comments = [line.split("#", 1)[1] for line in own if "#" in line]
        above = node.lineno - 2
        while above >= 0 and lines[above].strip().startswith("#"):
            comments.append(lines[above])
            above -= 1
        if not any("cpu" in c.lower() for c in comments):
            found.append((node.lineno, f"torch.{node.func.attr}"))
    return found


def test_every_tensor_factory_names_its_device_or_says_why_cpu():
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for line, call in factories_without_device(path.read_text(encoding="utf-8")):
            missing.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {call}")
    assert not missing, "tensor factories with no device= and no comment saying why the CPU is right:\n" + "\n".join(missing)


@pytest.mark.parametrize("snippet, flagged", [
    ("import torch\nq = torch.tensor([0.05, 0.95], dtype=torch.float64)\n", True),
    ("import torch\nq = torch.tensor([0.05, 0.95], device=p.device)\n", False),
    ("import torch\nq = torch.zeros_like(p)\n", False),
    ("import torch\nq = torch.randn_like(p)\n", False),
    ("import torch\ng = torch.Generator()\n", True),
    ("import torch\nx = torch.randint(0, 9, (3,), generator=g)\n", True),
    ("import torch\n# on the CPU: a table cast where it is used\nq = torch.arange(8)\n", False),
    ("import torch\nq = torch.arange(8)  # CPU: integer times\n", False),
    ("import torch\n# a comment about something else\nq = torch.arange(8)\n", True),
    ("import torch\n# on the CPU\n\nq = torch.arange(8)\n", True),  # a blank line ends the comment
])
def test_the_device_check_flags_what_it_should(snippet, flagged):
    assert bool(factories_without_device(snippet)) is flagged


def test_uncertainty_metrics_make_their_quantiles_on_the_particles_device():
    """The GPU crash: ``q`` made on the CPU for particles elsewhere. On the meta device the same mistake
    raises too, so this runs without a GPU (the scalars cannot be read back from meta, hence the stub)."""
    from dwgf import rendering

    seen = []
    real = torch.quantile

    def spy(p, q, **kwargs):
        seen.append((p.device, q.device))
        return real(p, q, **kwargs)

    particles, truth = torch.rand(3, 1, 4, 4, dtype=torch.float64), torch.rand(1, 4, 4, dtype=torch.float64)
    try:
        torch.quantile = spy
        rendering.uncertainty_metrics(particles, truth)
        with pytest.raises(RuntimeError, match="meta"):  # reading a meta scalar back, after the quantile ran on meta
            rendering.uncertainty_metrics(particles.to("meta"), truth.to("meta"))
    finally:
        torch.quantile = real
    assert seen == [(torch.device("cpu"),) * 2, (torch.device("meta"),) * 2]
