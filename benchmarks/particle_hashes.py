"""Hashes of the particles (float32 bytes) that the quickstart and every MNIST task config produce.

    python benchmarks/particle_hashes.py            # record: benchmarks/results/particle_hashes.json
    python benchmarks/particle_hashes.py --check    # recompute and compare; exit 1 on any difference
    python benchmarks/particle_hashes.py --steps 5  # a short version (5 iterations): its own entries

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


def particle_hashes(config: str, steps: int | None) -> dict[str, str]:
    """``{item name: sha256 of its particles}`` for one config on examples/mnist, as ``dwgf predict`` runs it."""
    from dwgf.cli import main as dwgf_main
    from dwgf.writers import PredictionWriter

    found: dict[str, str] = {}
    write = PredictionWriter.write_on_batch_end

    def record(self, trainer, pl_module, prediction, *args, **kwargs):
        for name, particles in zip(prediction["names"], prediction["particles"] if prediction["names"] else []):
            found[name] = hashlib.sha256(particles.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()
        return write(self, trainer, pl_module, prediction, *args, **kwargs)

    with tempfile.TemporaryDirectory() as out:
        files = [a for c in config.split("+") for a in ("--config", str(ROOT / c))]
        args = ["predict", *files, "--data.images", str(ROOT / "examples/mnist"), "--output", out,
                "--trainer.logger", "false", "--trainer.enable_progress_bar", "false"]
        if steps:
            args += ["--model.num_steps", str(steps)]
        with mock.patch.object(PredictionWriter, "write_on_batch_end", record):
            dwgf_main(args)
    return dict(sorted(found.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the recorded hashes instead of recording")
    parser.add_argument("--steps", type=int, default=None, help="iterations (default: each config's own)")
    parser.add_argument("--configs", nargs="+", default=CONFIGS)
    args = parser.parse_args()
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
