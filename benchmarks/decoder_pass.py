"""The flow's decoder pass on the CPU: what chunking saves in memory and what bfloat16 costs in accuracy.

    python benchmarks/decoder_pass.py memory  [--res 256] [--particles 4] [--chunks 0 2 1] [--iters 3]
    python benchmarks/decoder_pass.py cosine  [--res 256] [--particles 4]
    python benchmarks/decoder_pass.py mnist   [--split report100] [--task box_inpaint]
    python benchmarks/decoder_pass.py all

``memory``: the Stable-Diffusion-2.1-base layout (random weights, :func:`benchmarks.flow_speed.sd_layout_prior`)
at ``--res`` px, one image, N particles, a few flow iterations with ``--model.decoder_chunk`` each of
``--chunks`` (0: none, all particles at once), each in a fresh process: the peak resident memory above
the level before the flow (sampled every 2 ms), the seconds per iteration, and the largest difference of
the final latents from the unchunked run (and whether they are bit-identical).

``cosine``: the latent gradient of one iteration (data term + encoder term through the decoder) with the
decoder's forward and VJP under bfloat16 autocast, against float32, on the same layout: the cosine and
the relative error of the two gradients.

``mnist``: the task config on the split's digits through ``dwgf predict`` in ``32-true``, in ``bf16-mixed``
(network, decoder and VJP in bfloat16) and in ``bf16-mixed`` with ``--model.float32_autoencoder true``:
the particle-mean PSNR of each, and the change against float32 paired per digit with its standard error.

Each prints a Markdown table and rewrites its section of ``benchmarks/results/decoder_pass.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "decoder_pass.md"


def write_section(title: str, lines: list[str]) -> None:
    """Replaces the section ``## title`` of the results file (or appends it)."""
    text = RESULTS.read_text() if RESULTS.exists() else "# The flow's decoder pass on the CPU\n\nWritten by `benchmarks/decoder_pass.py`.\n"
    head = f"## {title}"
    parts = text.split("\n## ")
    kept = [parts[0]] + [p for p in parts[1:] if not p.startswith(title)]
    body = "\n".join([head, "", *lines, ""])
    RESULTS.write_text("\n## ".join(kept).rstrip("\n") + "\n\n" + body)
    print("\n".join(["", head, "", *lines]))


def stamp() -> str:
    return f"{datetime.date.today().isoformat()}, torch {torch.__version__}, {torch.get_num_threads()} threads"


# -- memory: one flow per process ------------------------------------------------------------------


def memory_child(res: int, particles: int, chunk: int, iters: int, out: str) -> None:
    from benchmarks.flow_speed import PeakMemory, problem, regularizers, sd_layout_prior
    from dwgf.flow import FlowConfig, Problem, dwgf_flow
    from dwgf.draws import ItemDraws, item_generators
    from dwgf.schedules import ConstantStepSize, DescendingTimesteps

    prior = sd_layout_prior(res)
    device = torch.device("cpu")
    op, y, params = problem(prior, 1, device)
    stamps = []
    with PeakMemory(device) as mem:
        start = time.perf_counter()
        config = FlowConfig(num_steps=iters, regularizers=regularizers(True), step_size=ConstantStepSize(0.3), timesteps=DescendingTimesteps(),
                            decoder_chunk=chunk or None)
        _, z, _ = dwgf_flow(prior, Problem(op, y, params, num_particles=particles), config, ItemDraws(item_generators([0], "cpu"), device),
                            lambda s: stamps.append(time.perf_counter()))
    times = [b - a for a, b in zip([start, *stamps[:-1]], stamps)][1:]  # the first iteration warms up
    torch.save({"z": z, "peak_mib": mem.peak_mib, "total_mib": mem.total_mib, "seconds": statistics.median(times)}, out)


def memory(args) -> None:
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for chunk in args.chunks:
            out = f"{tmp}/{chunk}.pt"
            subprocess.run([sys.executable, __file__, "_memory_child", str(args.res), str(args.particles), str(chunk), str(args.iters), out],
                           check=True, cwd=ROOT)
            runs[chunk] = torch.load(out)
    base = runs[args.chunks[0]]
    lines = [f"SD 2.1-base layout (random weights), {args.res} px, 1 image x N {args.particles}, {args.iters} iterations "
             f"(KL + encoder term), CPU, {stamp()}. Command: `python benchmarks/decoder_pass.py memory --res {args.res} "
             f"--particles {args.particles} --chunks {' '.join(map(str, args.chunks))} --iters {args.iters}`.", "",
             "| decoder_chunk | peak MiB above the flow's start | vs none | s / iteration | largest latent difference vs none | bit-identical |",
             "|---|---|---|---|---|---|"]
    for chunk, r in runs.items():
        diff = float((r["z"] - base["z"]).abs().max())
        lines.append(f"| {chunk or 'none (all)'} | {r['peak_mib']:.0f} | {r['peak_mib'] / base['peak_mib']:.2f} | {r['seconds']:.2f} | "
                     f"{diff:.2e} | {'yes' if torch.equal(r['z'], base['z']) else 'no'} |")
    write_section(f"Chunked decoder pass: peak memory at {args.res} px", lines)


# -- cosine: bfloat16 decoder pass against float32 ----------------------------------------------------


def cosine(args) -> None:
    from benchmarks.flow_speed import problem, sd_layout_prior
    from dwgf.flow import FlowConfig, Problem, flow_gradient
    from dwgf.draws import ItemDraws, item_generators
    from dwgf.regularizers import EncoderConsistency

    prior = sd_layout_prior(args.res)
    op, y, params = problem(prior, 1, torch.device("cpu"))
    n = args.particles
    rows = []
    for t in (900, 500, 100):
        z = torch.randn(1, n, *prior.latent_shape, generator=torch.Generator().manual_seed(t))
        grads = {}
        for name, dtype in (("float32", None), ("bfloat16", torch.bfloat16)):
            start = time.perf_counter()
            # only the encoder term: no network call, so unet_dtype sets the decoder pass's precision alone
            config, problem = FlowConfig(regularizers=(EncoderConsistency(),)), Problem(op, y, params, num_particles=n)
            draw = ItemDraws(item_generators([0], "cpu"), "cpu")
            config.start(prior, problem, draw)
            grads[name], _ = flow_gradient(prior, problem, config, z, torch.tensor([t]), draw, unet_dtype=dtype)
            grads[name + "_s"] = time.perf_counter() - start
        a, b = grads["float32"].flatten().double(), grads["bfloat16"].flatten().double()
        cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
        rows.append(f"| {t} | {cos:.5f} | {float((a - b).norm() / a.norm()):.4f} | {grads['float32_s']:.1f} | {grads['bfloat16_s']:.1f} |")
    lines = [f"SD 2.1-base layout (random weights), {args.res} px, N {n}: the latent gradient of the data and encoder terms "
             f"pulled back through the decoder, bfloat16 autocast against float32, on the same particles and noise; CPU, {stamp()}. "
             f"Command: `python benchmarks/decoder_pass.py cosine --res {args.res} --particles {n}`. The seconds are one call each "
             "on this CPU, for orientation only (flow_speed.py is the timing benchmark).", "",
             "| t | cosine | relative error | float32 s | bfloat16 s |", "|---|---|---|---|---|", *rows]
    write_section(f"bfloat16 decoder pass: latent-gradient cosine at {args.res} px", lines)


# -- mnist: PSNR of the whole run ----------------------------------------------------------------------


def mnist(args) -> None:
    from benchmarks.harness import run, task_config

    settings = {"32-true": ["--trainer.precision", "32-true"], "bf16-mixed": ["--trainer.precision", "bf16-mixed"],
                "bf16-mixed, float32 autoencoder": ["--trainer.precision", "bf16-mixed", "--model.float32_autoencoder", "true"]}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (name, extra) in enumerate(settings.items()):
            results[name] = run(task_config(args.task), args.split, Path(tmp) / str(i), ["--trainer.logger", "false", *extra])
    base = results["32-true"]["per_item"]
    lines = [f"`configs/mnist/{args.task}.yaml` (200 iterations, N 8) on {args.split}'s {len(base)} digits through `dwgf predict`; "
             f"CPU, {stamp()}. Command: `python benchmarks/decoder_pass.py mnist --split {args.split} --task {args.task}`.", "",
             "| precision | particle-mean PSNR | change vs 32-true (paired, ± s.e.) | largest change of one digit | s / image |",
             "|---|---|---|---|---|"]
    for name, r in results.items():
        diffs = [r["per_item"][k] - base[k] for k in base]
        se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else 0.0
        lines.append(f"| {name} | {r['psnr_mean']:.3f} | {statistics.mean(diffs):+.3f} ± {se:.3f} | {max(diffs, key=abs):+.3f} | "
                     f"{r['seconds']:.2f} |")
    write_section(f"bfloat16 on MNIST: {args.task}, {args.split}", lines)
    (RESULTS.parent / "decoder_pass_mnist.json").write_text(json.dumps({k: v["per_item"] for k, v in results.items()}, indent=1))


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "_memory_child":
        res, particles, chunk, iters, out = argv[1:]
        memory_child(int(res), int(particles), int(chunk), int(iters), out)
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("what", choices=["memory", "cosine", "mnist", "all"])
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--particles", type=int, default=4)
    parser.add_argument("--chunks", type=int, nargs="+", default=[0, 2, 1])
    parser.add_argument("--iters", type=int, default=3)
    parser.add_argument("--split", default="report100")
    parser.add_argument("--task", default="box_inpaint")
    args = parser.parse_args(argv)
    for what, fn in (("memory", memory), ("cosine", cosine), ("mnist", mnist)):
        if args.what in (what, "all"):
            fn(args)


if __name__ == "__main__":
    main()
