"""Hashes of the particles (float32 bytes) that the quickstart and every MNIST task config produce.

    python benchmarks/particle_hashes.py            # record: benchmarks/results/particle_hashes.json
    python benchmarks/particle_hashes.py --check    # recompute and compare; exit 1 on any difference
    python benchmarks/particle_hashes.py --steps 5  # a short version (5 iterations): its own entries
    python benchmarks/particle_hashes.py --compare BASE HEAD [--configs ...]   # two commits in one run

``--compare A B`` checks out each commit in a temporary git worktree and computes every config's hashes there, with
that commit's code and configs (a subprocess per commit, ``PYTHONPATH`` set to its worktree), on this machine in one
run, then prints which configs are identical; exit 1 on any difference. Nothing is recorded.

A refactoring that must not change results (a code move, new wiring) is checked with ``--check``
before and after: every particle of every item must be bit-identical. The configs run as
``dwgf predict`` builds them (the CLI's parser and classes), on the 8 digits of examples/mnist, with
the torch thread count of this process; the hashes are of this machine's float32 arithmetic.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import tempfile
from pathlib import Path
from unittest import mock

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks/results/particle_hashes.json"
# a "+" joins a method overlay to its task config (the baselines' code paths)
CONFIGS = ["configs/quickstart.yaml", *sorted(str(p.relative_to(ROOT)) for p in (ROOT / "configs/mnist").glob("*.yaml")),
           *(f"configs/mnist/box_inpaint.yaml+configs/methods/box_inpaint/{m}.yaml" for m in ("dps", "psld", "inversion", "reddiff"))]


def particle_hashes(config: str, steps: int | None, root: Path = ROOT) -> dict[str, str]:
    """``{item name: sha256 of its particles}`` for one config on examples/mnist, as ``dwgf predict`` runs it (the config
    and the digits of the checkout ``root``)."""
    from dwgf.cli import main as dwgf_main
    from dwgf.writers import PredictionWriter

    found: dict[str, str] = {}
    write = PredictionWriter.write_on_batch_end

    def record(self, trainer, pl_module, prediction, *args, **kwargs):
        for name, particles in zip(prediction["names"], prediction["particles"] if prediction["names"] else []):
            found[name] = hashlib.sha256(particles.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        return write(self, trainer, pl_module, prediction, *args, **kwargs)

    with tempfile.TemporaryDirectory() as out:
        files = [a for c in config.split("+") for a in ("--config", str(root / c))]
        args = ["predict", *files, "--data.images", str(root / "examples/mnist"), "--output", out,
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
        if steps:
            args += ["--model.num_steps", str(steps)]
        with mock.patch.object(PredictionWriter, "write_on_batch_end", record):
            dwgf_main(args)
    return dict(sorted(found.items()))


def compare(revisions: list[str], configs: list[str], steps: int | None) -> None:
    """Each config's hashes at two commits, computed here in one run; exit 1 on any difference."""
    import os
    import subprocess
    import sys

    found = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, rev in enumerate(revisions):
            tree = Path(tmp) / f"tree{i}"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), rev], check=True, capture_output=True)
            try:
                out = Path(tmp) / f"hashes{i}.json"
                env = dict(os.environ, PYTHONPATH=str(tree), HF_HUB_OFFLINE="1")
                command = [sys.executable, str(Path(__file__).resolve()), "--root", str(tree), "--write", str(out), "--configs", *configs]
                if steps:
                    command += ["--steps", str(steps)]
                print(f"{rev}: computing {len(configs)} configs in a worktree", flush=True)
                subprocess.run(command, check=True, env=env)
                found.append(json.loads(out.read_text()))
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)], capture_output=True)
    different = [c for c in configs if found[0].get(c) != found[1].get(c)]
    for config in configs:
        verdict = "identical" if config not in different else "DIFFERENT"
        print(f"{config}: {verdict} ({len(found[0].get(config, {}))} items)", flush=True)
    print(f"{len(configs) - len(different)} of {len(configs)} configs identical between {revisions[0]} and {revisions[1]} "
          f"({torch.get_num_threads()} threads)")
    raise SystemExit(1 if different else 0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded hashes instead of recording")
    parser.add_argument("--compare", nargs=2, metavar=("REV_A", "REV_B"), help="compute at two commits (git worktrees) and compare")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default: each config's own)")
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)  # --compare's worktrees
    parser.add_argument("--write", type=Path, default=None, help=argparse.SUPPRESS)  # --compare: where a worktree's hashes go
    args = parser.parse_args()
    if args.compare:
        return compare(args.compare, args.configs, args.steps)
    if args.write:  # written after each config, so that a run cut short keeps what it computed
        found: dict[str, dict[str, str]] = {}
        for config in args.configs:
            found[config] = particle_hashes(config, args.steps, args.root)
            args.write.write_text(json.dumps(found, indent=1, sort_keys=True))
            print(f"{config}: {len(found[config])} items", flush=True)
        return
    recorded = json.loads(RESULTS.read_text()) if RESULTS.is_file() else {}
    key = f"steps={args.steps}" if args.steps else "configs"
    mine = recorded.setdefault(key, {})
    different = []
    for config in args.configs:
        hashes = particle_hashes(config, args.steps)
        if args.check:
            same = hashes == mine.get(config)
            verdict = "identical" if same else "DIFFERENT" if config in mine else "NOT RECORDED (run without --check to record it)"
            print(f"{config}: {verdict} ({len(hashes)} items)", flush=True)
            if not same:
                different.append(config)
        else:
            mine[config] = hashes
            print(f"{config}: recorded {len(hashes)} items", flush=True)
    if args.check:
        raise SystemExit(1 if different else 0)
    recorded.setdefault("threads", torch.get_num_threads())
    RESULTS.write_text(json.dumps(recorded, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
