"""The per-item uncertainty metrics of metrics.csv, against hand-computed cases."""

import pytest
import torch

from dwgf.rendering import crps, uncertainty_metrics


def test_crps_of_a_hand_computed_ensemble():
    # one pixel, particles 0, 1, 3 and truth 1: E|X - x| = (1 + 0 + 2) / 3 = 1;
    # E|X - X'| over all 9 ordered pairs = (0+1+3 + 1+0+2 + 3+2+0) / 9 = 12/9; CRPS = 1 - 6/9 = 1/3
    p = torch.tensor([0.0, 1.0, 3.0]).view(3, 1, 1, 1)
    assert crps(p, torch.ones(1, 1, 1)).item() == pytest.approx(1 / 3)
    # one particle: the absolute error
    assert crps(torch.full((1, 1, 2, 2), 0.25), torch.zeros(1, 2, 2)).item() == pytest.approx(0.25)


def test_crps_is_the_mean_over_pixels_and_agrees_with_the_pairwise_formula():
    gen = torch.Generator().manual_seed(0)
    p, x = torch.rand(5, 2, 3, 3, generator=gen), torch.rand(2, 3, 3, generator=gen)
    direct = (p - x).abs().mean(0) - 0.5 * (p[:, None] - p[None]).abs().mean((0, 1))
    assert crps(p, x).item() == pytest.approx(direct.mean().item(), rel=1e-6)


def test_spread_and_coverage_of_a_hand_computed_case():
    # two pixels, four particles; the 5%..95% quantiles (linear) of 0, 0.2, 0.4, 0.6 are 0.03 and 0.57
    p = torch.tensor([[0.0, 0.5], [0.2, 0.5], [0.4, 0.5], [0.6, 0.5]]).view(4, 1, 1, 2)
    truth = torch.tensor([0.5, 0.1]).view(1, 1, 2)  # inside the first pixel's interval; outside the second's (a point)
    m = uncertainty_metrics(p, truth)
    std0 = torch.tensor([0.0, 0.2, 0.4, 0.6]).std(unbiased=False).item()
    assert m["spread"] == pytest.approx(std0 / 2)  # the second pixel does not spread
    assert m["coverage90"] == pytest.approx(0.5)
    truth_edge = torch.tensor([0.57, 0.5]).view(1, 1, 2)  # on the interval's edge counts, a point interval covers its point
    assert uncertainty_metrics(p, truth_edge)["coverage90"] == pytest.approx(1.0)


def test_one_particle_has_no_spread_and_covers_nothing_it_misses():
    p = torch.full((1, 1, 2, 2), 0.5)
    m = uncertainty_metrics(p, torch.zeros(1, 2, 2))
    assert m == {"spread": 0.0, "crps": pytest.approx(0.5), "coverage90": 0.0, "coverage90_unobserved": 0.0}
