"""Methods: each a function ``(prior, problem, draw, *, callback, **settings) -> (particles, failed_at)``.

``problem`` is a :class:`~dwgf.problem.Problem` (operator, measurements, data term, ``N``), ``draw``
the items' noise (:class:`~dwgf.draws.ItemDraws`; ``None``: CPU generators seeded ``0 .. B-1``),
``callback`` is called with the iteration's state (:class:`~dwgf.problem.SamplerState` or its
:class:`~dwgf.problem.FlowState`) after every iteration, and ``settings`` are the method's own
(each module's settings class). ``particles`` is ``B x N x C x H x W`` (decoded, unclamped);
``failed_at`` ``(B,)`` the first iteration at which an item's values were not finite (``-1``: never).

:class:`dwgf.solver.InverseSolver` runs any of them in ``dwgf predict`` (seeds, noise, failures and
outputs in one place): ``model: {class_path: dwgf.solver.InverseSolver, init_args: {method:
my_module.my_method, settings: {...}}}``.
"""

from dwgf.methods.dps import DPSConfig, PSLDConfig, latent_dps, psld
from dwgf.methods.gradient_flow import dwgf
from dwgf.methods.inversion import InversionConfig, decoder_inversion
from dwgf.methods.red_diff import RedDiffConfig, red_diff
from dwgf.methods.smc import SMCConfig, SMCState, smc

__all__ = ["dwgf", "latent_dps", "psld", "red_diff", "decoder_inversion", "smc", "DPSConfig", "PSLDConfig", "SMCConfig", "SMCState",
           "RedDiffConfig", "InversionConfig"]
