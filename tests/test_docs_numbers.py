"""README's figures (and so the site's home page, which is README: scripts/mkdocs_hooks.py) come from the committed
results in benchmarks/results/: each is recomputed here from the results file the docs cite, and a stale figure fails."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()
TASKS = {"box_inpaint": "box inpainting", "random_inpaint": "random inpainting (70% missing)", "sr4": "SR x4",
         "gaussian_deblur": "Gaussian deblur", "jpeg": "JPEG (quality 10)", "saturation": "saturation (gain 2.5, level 0.8)",
         "phase_retrieval": "phase retrieval (2x, up to shifts and twin)"}
METHODS = ("DWGF", "RED-diff-latent", "Latent DPS", "PSLD", "decoder inversion")


def tables(path: Path) -> list[dict[str, str]]:
    """Every row of every Markdown table in ``path``, as ``{column: cell}``."""
    rows, header = [], None
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if set("".join(cells)) <= set("-: "):
            continue
        if header is None:
            header = cells
        else:
            rows.append(dict(zip(header, cells)))
    return rows


def number(cell: str) -> float:
    return float(cell.replace("*", "").split("±")[0])


def percent_range(values) -> str:
    return f"{100 * min(values):.1f}-{100 * max(values):.1f}%"


def test_the_results_table_is_quality_md():
    """Each cell of README's table: the method's first row for the task in quality.md (mean PSNR, and DWGF's lead)."""
    first: dict[tuple[str, str], dict[str, str]] = {}
    for row in tables(RESULTS / "quality.md"):
        if row.get("method"):
            first.setdefault((row["task"], row["method"]), row)
    shown = {row["task"]: row for row in tables(ROOT / "README.md") if row.get("task") in TASKS.values()}
    assert len(shown) == len(TASKS)
    for task, label in TASKS.items():
        for method in METHODS:
            row = first[(task, method)]
            cell = shown[label][method]
            if row["mean PSNR"] == "-":
                assert cell == "n/a (needs A^T)", (task, method, cell)
                continue
            expected = row["mean PSNR"] if method == "DWGF" else f"{row['mean PSNR']} ({row['DWGF - it (dB)']})"
            assert cell == expected, (task, method, cell, expected)


def test_the_seconds_per_digit_are_quality_md():
    first: dict[tuple[str, str], dict[str, str]] = {}
    for row in tables(RESULTS / "quality.md"):
        if row.get("method"):
            first.setdefault((row["task"], row["method"]), row)
    dwgf = [number(first[(t, "DWGF")]["s/image"]) for t in TASKS]
    others = [number(first[(t, m)]["s/image"]) for t in TASKS for m in ("Latent DPS", "PSLD") if first[(t, m)]["s/image"] != "-"]
    expected = f"({min(dwgf):.1f}-{max(dwgf):.1f} s per digit against {min(others):.1f}-{max(others):.1f} for Latent DPS and PSLD"
    assert expected in " ".join(README.split())  # wherever README's lines break


def test_the_coverage_figures_are_calibrated_mnist_md():
    rows = [r for r in tables(RESULTS / "calibrated_mnist.md") if r.get("level") == "0.9" and "first config" not in r["method"]]
    own = {m: [number(r["cov90 (particles)"]) for r in rows if r["method"] == m] for m in ("DWGF", "SMC", "SMC + moves")}
    calibrated = [number(r["calibrated coverage"]) for r in rows]
    assert f"hold the truth in {percent_range(own['DWGF'])} of MNIST" in README
    assert f"their intervals hold {percent_range(own['SMC'])} of pixels ({percent_range(own['SMC + moves'])} with moves)" in README
    assert f"hold the truth in {100 * min(calibrated):.1f}-{100 * max(calibrated):.1f}% of the report digits' pixels" in README.replace("\n", " ")


def test_the_exact_posterior_ratios_are_posterior_md():
    rows = [r for r in tables(RESULTS / "posterior.md") if r.get("method")]
    floor = {(r["d"], r["d_y"]): number(r["sliced W1 to exact"]) for r in rows if r["method"] == "exact"}

    def ratios(method: str) -> list[float]:
        return [number(r["sliced W1 to exact"]) / floor[(r["d"], r["d_y"])] for r in rows if r["method"] == method]

    dwgf, smc, moves = ratios("DWGF"), ratios("SMC"), ratios("SMC + moves")
    assert len(dwgf) == len(smc) == len(moves) == 9
    assert f"they are {min(dwgf):.0f} to {max(dwgf):.0f} times further" in README
    assert f"{min(smc):.1f} to {max(smc):.1f} times the exact floor, {min(moves):.1f} to {max(moves):.1f} with" in README


def test_the_quickstart_figure_is_the_one_its_page_checks():
    """The caption's PSNR is the mean particle-mean PSNR of the metrics that docs/getting-started.md shows (which
    tests/test_docs.py checks against a fresh run of the quickstart)."""
    page = (ROOT / "docs" / "getting-started.md").read_text()
    block = re.search(r"<!-- docs-test: metrics -->\n```text\n(.*?)```", page, re.S).group(1)
    header, *rows = [line.split(",") for line in block.strip().splitlines()]
    values = [float(row[header.index("psnr_mean")]) for row in rows]
    assert f"particle-mean PSNR {sum(values) / len(values):.2f} dB" in README


def test_the_coverage_figures_are_coverage_mnist_md():
    """README's box-inpainting figures of --region unobserved and --per-image 0.1: DWGF's row of the summary table."""
    row = next(r for r in tables(RESULTS / "coverage_mnist.md") if r.get("run") == "box_inpaint DWGF")
    assert f"{100 * number(row['region: coverage']):.1f}% of the box's pixels covered" in README
    assert f"({row['per image: >= 0.9']} of the digits\nhave at least 0.9 of their box covered)" in README
