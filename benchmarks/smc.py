"""The SMC sampler on the exact-posterior bed: what the importance weights buy, against the number of particles.

    python benchmarks/smc.py study [--dims 80] [--dys 1 2 4] [--ns 8 32 128 512 1024] [--guidance 0.3 1 3] [--anneal 0 1]
                                   [--moves 0 2] [--move-sizes 0.05 0.2]

``study`` runs :func:`dwgf.methods.smc` on ``benchmarks/posterior.py``'s bed (the same problems, seeds and sample
counts as ``posterior.md``: 3 problems per ``(d, d_y)``, 1000 samples each, 200 steps), with ``N`` particles per
measurement (``ceil(1000 / N)`` independent measurements' worth of particles make the 1000 samples) and each
guidance strength, with the weights and without them (the same proposal, no weights, no resampling). It
reports sliced W1 to exact posterior samples, mode coverage, and the mean effective sample size before
resampling (its mean over steps, and its minimum). The data term is the bed's own Gaussian likelihood
(``GaussianLikelihood``, the operator's ``sigma_y``); the twist is that likelihood at the Tweedie estimate
with its variance inflated to ``sigma_y^2 + anneal (1 - abar_t)`` (``anneal = 0``: the exact likelihood at
every step, as in the first study). No tuning: every variant is in the table. Rows of earlier runs stay in
``benchmarks/results/smc_study.json`` unless a run repeats them; the table is ``benchmarks/results/smc_study.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import shlex
import sys

if __package__ in (None, ""):  # run as ``python benchmarks/smc.py``: the repository becomes importable
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.harness import RESULTS, save_json
from benchmarks import posterior
from benchmarks.posterior import STEPS, directions, evaluate, exact_samples, problem, samples_of, stats


def smc_solver(prior, n: int, guidance: float, weights: bool, ess: list, anneal: float = 0.0, moves: int = 0, move_size: float = 0.1,
               tempering: float = 0.0):
    solver = posterior.smc_solver(prior, n, guidance, anneal, moves, move_size, weights, tempering)
    solver.on_iteration = lambda state: ess.append(float(state.ess.mean()) / n)  # the share of N, before resampling
    return solver


DEFAULTS = {"anneal": 0.0, "moves": 0, "move_size": 0.0, "tempering": 0.0}  # rows of runs before these columns existed


def variants(args) -> list[tuple[bool, int, float, float]]:
    """(weights, moves, move_size, tempering) of each run of a cell: with and without the weights, then resample-move,
    then each adaptive tempering threshold (with the weights, and with each resample-move)."""
    plain = [(True, 0, 0.0, 0.0), (False, 0, 0.0, 0.0)] if 0 in args.moves else []
    found = plain + [(True, m, size, 0.0) for m in args.moves if m for size in args.move_sizes]
    for tempering in args.tempering:
        if tempering:
            found += [(True, m, size, tempering) for m in args.moves for size in (args.move_sizes if m else [0.0])]
    return found


def study(args, command: str) -> None:
    path = RESULTS / "smc_study.json"
    earlier = json.loads(path.read_text())["rows"] if path.is_file() else []
    rows = []
    for d in args.dims:
        dirs = directions(d)
        for dy in args.dys:
            probs = [problem(d, dy, i) for i in range(args.problems)]
            exact = [exact_samples(p, args.samples, 7) for p in probs]
            floor = [evaluate(exact_samples(p, args.samples, 8), p, e, dirs)["sw"] for p, e in zip(probs, exact)]
            for anneal in args.anneal:
                for n in args.ns:
                    for guidance in args.guidance:
                        for weights, moves, size, tempering in variants(args):
                            results, ess, lowest = [], [], []
                            for i, (prob, ex) in enumerate(zip(probs, exact)):
                                start = len(ess)
                                s, seconds = samples_of(smc_solver(prob.prior, n, guidance, weights, ess, anneal, moves, size, tempering), prob,
                                                       args.samples, 2 + i)
                                results.append({**evaluate(s, prob, ex, dirs), "seconds": seconds})
                                lowest.append(min(ess[start:], default=float("nan")))
                            row = {"d": d, "dy": dy, "n": n, "guidance": guidance, "weights": weights, "anneal": anneal,
                                   "moves": moves, "move_size": size, "tempering": tempering,
                                   "sw": stats([r["sw"] for r in results]), "coverage": stats([r["coverage"] for r in results]),
                                   "mean_error": stats([r["mean_error"] for r in results]), "seconds": stats([r["seconds"] for r in results]),
                                   "ess": f"{sum(ess) / len(ess):.3f}" if weights else "-",
                                   "min_ess": f"{min(lowest):.3f}" if weights else "-", "floor": stats(floor),
                                   "date": str(datetime.date.today()), "command": command}
                            rows.append(row)
                            print("SMC", row, flush=True)
    ident = ("d", "dy", "n", "guidance", "weights", "anneal", "moves", "move_size", "tempering")
    fresh = {tuple(r[k] for k in ident) for r in rows}
    kept = [{**DEFAULTS, **r} for r in earlier if tuple({**DEFAULTS, **r}[k] for k in ident) not in fresh]
    merged = sorted(kept + rows, key=lambda r: tuple(r[k] for k in ident[:2]) + (r["anneal"], r["n"], r["guidance"], not r["weights"],
                                                                                    r["moves"], r["move_size"], r["tempering"]))
    data = {"command": command, "date": str(datetime.date.today()), "threads": torch.get_num_threads(), "problems": args.problems,
            "samples": args.samples, "steps": STEPS, "rows": merged}
    save_json(path, data)
    write_markdown(data)


def write_markdown(data: dict) -> None:
    lines = [
        "# SMC on the exact-posterior bed: particles, guidance, and what the weights buy",
        "",
        f"Produced by `python benchmarks/smc.py study` (the last run: `{data['command']}`, {data['date']}, {data['threads']} CPU threads;",
        "rows without a date are from the first run, 2026-12-05, with `anneal` 0); the bed and its measures are",
        f"`posterior.md`'s: {data['problems']} problems per cell (mean ± sd), {data['samples']} samples, {data['steps']} steps.",
        "*weights: no* is the same proposal without importance weights or resampling; *moves*: Langevin moves after each",
        "resampling (resample-move, `SMCConfig.moves`) of step `move_size (1 - abar_t)` (- : none). *anneal*: the twist's variance is",
        "`sigma_y^2 + anneal (1 - abar_t)` (0: the exact likelihood at the Tweedie estimate). *ESS*: the mean effective sample",
        "size before resampling, as a share of N (*min*: its lowest over the steps and problems). *floor*: a second set of",
        "exact samples. *tempering*: adaptive tempering's conditional-ESS threshold (`SMCConfig.tempering`; - : none).",
        "No setting was tuned: every run is here.",
        "",
        "| d | d_y | anneal | N | guidance | weights | moves | tempering | sliced W1 to exact | floor | mode coverage | mean error / sqrt(d) "
        "| ESS / N | min | seconds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *(f"| {r['d']} | {r['dy']} | {r.get('anneal', 0.0):g} | {r['n']} | {r['guidance']:g} | {'yes' if r['weights'] else 'no'} | "
          f"{_moves(r)} | {r.get('tempering') or '-'} | {r['sw']} | "
          f"{r['floor']} | {r['coverage']} | {r['mean_error']} | {r['ess']} | {r.get('min_ess', '-')} | {r['seconds']} |" for r in data["rows"]),
        "",
    ]
    path = RESULTS / "smc_study.md"
    path.write_text("\n".join(lines))
    print(f"wrote {path}")


def _moves(row: dict) -> str:
    return f"{row['moves']} x {row['move_size']:g}" if row.get("moves") else "-"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mode", choices=["study"])
    parser.add_argument("--dims", nargs="+", type=int, default=[80])
    parser.add_argument("--dys", nargs="+", type=int, default=[1, 2, 4])
    parser.add_argument("--ns", nargs="+", type=int, default=[8, 32, 128, 512, 1024])
    parser.add_argument("--guidance", nargs="+", type=float, default=[0.3, 1.0, 3.0])
    parser.add_argument("--anneal", nargs="+", type=float, default=[0.0, 1.0])
    parser.add_argument("--moves", nargs="+", type=int, default=[0], help="Langevin moves after each resampling (0: none, and the "
                        "variant without weights)")
    parser.add_argument("--move-sizes", nargs="+", type=float, default=[0.05])
    parser.add_argument("--tempering", nargs="+", type=float, default=[0.0], help="adaptive tempering thresholds (0: none)")
    parser.add_argument("--problems", type=int, default=3)
    parser.add_argument("--samples", type=int, default=1000)
    args = parser.parse_args(argv)
    command = ("python benchmarks/smc.py " + shlex.join(sys.argv[1:] if argv is None else argv)).rstrip()
    study(args, command)


if __name__ == "__main__":
    main()
