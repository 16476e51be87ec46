"""The documentation site's commands run as shown.

Every ``dwgf predict`` command in a ``bash`` block of ``docs/`` whose inputs ship with the repository
(its configs, ``examples/``, the shipped prior) is run here, shortened to two iterations. The
quickstart's command, marked ``<!-- docs-test: full -->`` in ``docs/getting-started.md``, runs in full,
and its ``metrics.csv`` rows and picture must be the ones the page shows. Commands that need files a
user brings (their own photos, a checkpoint) are listed by :func:`test_the_docs_commands_are_found`.
"""

from __future__ import annotations

import csv
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dwgf.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PATH_OPTIONS = ("--config", "--data.images", "--data.measurements", "--data.masks")


def _commands() -> list[tuple[str, list[str], str, bool]]:
    """``(page, argv after 'dwgf', PYTHONPATH, full)`` of every ``dwgf predict`` command in the site's bash blocks."""
    found = []
    for page in sorted(DOCS.rglob("*.md")):
        text = page.read_text()
        for block in re.finditer(r"(<!-- docs-test: full -->\n)?```bash\n(.*?)```", text, re.S):
            full = block.group(1) is not None
            lines = block.group(2).replace("\\\n", " ").splitlines()
            for line in lines:
                line = line.split(" #")[0].strip()
                if "dwgf predict" not in line or line.startswith(("#", "for ", "srun", "torchrun")):
                    continue
                words = shlex.split(line)
                env = dict(w.split("=", 1) for w in words[: words.index("dwgf")] if "=" in w)
                found.append((str(page.relative_to(ROOT)), words[words.index("dwgf") + 1 :], env.get("PYTHONPATH", ""), full))
    return found


def _runnable(argv: list[str]) -> bool:
    """Whether every file the command names ships with the repository (and it loads no checkpoint of the user's)."""
    if "--model.prior.pretrained" in argv or "--trainer.num_nodes" in argv:  # a user's checkpoint; several nodes: test_processes.py
        return False
    for opt, value in zip(argv, argv[1:]):
        if opt in PATH_OPTIONS and not (ROOT / value).exists():
            return False
    return True


COMMANDS = _commands()
RUNNABLE = [c for c in COMMANDS if _runnable(c[1])]


def test_the_docs_commands_are_found():
    """The site has commands, several of them runnable here, and the quickstart is marked to run in full."""
    assert len(COMMANDS) >= 10 and len(RUNNABLE) >= 5, [c[1] for c in COMMANDS]
    assert [c[1] for c in RUNNABLE if c[3]] == [["predict", "--config", "configs/quickstart.yaml"]]


def _two_steps(argv: list[str]) -> list[str]:
    """The option that cuts a command to two iterations: ``--model.num_steps 2``, or for the generic solver
    (``InverseSolver`` with a method of one's own) ``--model.settings.num_steps 2``, which keeps its other settings."""
    import yaml

    for i, arg in enumerate(argv[:-1]):
        if arg == "--config":
            model = (yaml.safe_load((ROOT / argv[i + 1]).read_text()) or {}).get("model") or {}
            if str(model.get("class_path", "")).endswith("InverseSolver"):
                return ["--model.settings.num_steps", "2"]
    return ["--model.num_steps", "2"]


def _run(argv: list[str], pythonpath: str, out: Path, monkeypatch, *extra: str) -> list[dict]:
    monkeypatch.chdir(ROOT)
    if pythonpath:
        monkeypatch.syspath_prepend(str(ROOT / pythonpath))
    argv = list(argv)
    if "--output" in argv:
        i = argv.index("--output")
        del argv[i : i + 2]
    main([*argv, "--output", str(out), "--trainer.logger", "false", *extra])
    with open(out / "metrics.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("page, argv, pythonpath", [c[:3] for c in RUNNABLE if not c[3]],
                         ids=[f"{c[0]}:{' '.join(c[1][1:5])}" for c in RUNNABLE if not c[3]])
def test_a_docs_command_runs(page, argv, pythonpath, tmp_path, monkeypatch):
    rows = _run(argv, pythonpath, tmp_path / "out", monkeypatch, *_two_steps(argv))
    assert rows and all(r["name"] for r in rows)


def test_the_quickstart_gives_what_the_page_shows(tmp_path, monkeypatch):
    """The quickstart in full: its metrics rows to 0.05 dB, and its picture, are the ones the page shows."""
    (page, argv, pythonpath, _), = [c for c in RUNNABLE if c[3]]
    rows = {r["name"]: r for r in _run(argv, pythonpath, tmp_path / "out", monkeypatch)}
    text = (ROOT / page).read_text()
    shown = re.search(r"<!-- docs-test: metrics -->\n```text\n(.*?)```", text, re.S).group(1)
    shown_rows = list(csv.DictReader(shown.splitlines()))
    assert len(shown_rows) == len(rows) == 8
    for row in shown_rows:
        for key in ("psnr_mean", "psnr"):
            assert abs(float(rows[row["name"]][key]) - float(row[key])) < 0.05, (row["name"], key, rows[row["name"]][key], row[key])
    picture = re.search(r"!\[[^\]]*\]\(([^)]+)\)", text[text.index("<!-- docs-test: metrics -->") :]).group(1)
    ours = np.asarray(Image.open(tmp_path / "out" / "summary.png").convert("L"), dtype=float)
    theirs = np.asarray(Image.open(ROOT / picture).convert("L"), dtype=float)
    assert ours.shape == theirs.shape and np.abs(ours - theirs).mean() < 1.0, np.abs(ours - theirs).mean()


def test_the_readme_fits_a_screen_and_its_links_resolve():
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    links = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text)
    assert len(links) >= 10
    for link in links:
        assert link.startswith("https://") or (ROOT / link).exists(), link


# what README.md said before the site, section by section: each now lives on a page (title, page)
MOVED = [("Quickstart: two commands on a fresh machine", "getting-started.md"), ("Install", "getting-started.md"),
         ("A first run", "running.md"), ("Options", "running.md"), ("What a run writes", "running.md"),
         ("Uncertainty: `std.png`, `spread`, `crps`, `coverage90`", "running.md"), ("Output folder and resume", "running.md"),
         ("Long runs: failures and bad input", "running.md"), ("What dwgf says about bad input", "running.md"),
         ("Several machines", "scaling.md"), ("Priors and checkpoints", "priors.md"),
         ("The inpainting box at other resolutions", "operators.md"), ("Python API", "api/index.md"), ("What is built in", "extending.md"),
         ("Methods compared", "results/methods.md"), ("Against exact posteriors", "results/posteriors.md"),
         ("Sampling the posterior", "results/sampling.md"), ("Diverse particles", "results/sampling.md"), ("Performance", "performance.md")]


@pytest.mark.parametrize("title, page", MOVED)
def test_every_section_of_the_old_readme_lives_on_a_page(title, page):
    assert re.search(rf"^#+ {re.escape(title)}$", (DOCS / page).read_text(), re.M), (title, page)


def test_no_reference_to_a_document_the_repository_lacks():
    texts = [*ROOT.glob("dwgf/**/*.py"), *ROOT.glob("configs/**/*.yaml"), *ROOT.glob("docs/**/*.md"), ROOT / "README.md", ROOT / "CONTRIBUTING.md"]
    for path in texts:
        for name in re.findall(r"\b([A-Z][A-Z_]+\.md)\b", path.read_text(encoding="utf-8")):
            assert (ROOT / name).is_file() or (path.parent / name).is_file(), f"{path} cites {name}, which is not in the repository"


def _build_docs(config: Path):
    import os
    import subprocess

    env = dict(os.environ, DWGF_MKDOCS_CONFIG=str(config))
    return subprocess.run(["bash", str(ROOT / "scripts/build_docs.sh"), str(config.parent / "site")], env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_docs_build_fails_on_a_planted_warning(tmp_path):
    """CI's docs step (scripts/build_docs.sh) fails on a single warning: here a link to a page that does not exist,
    planted in a copy of the site; the same copy without it builds."""
    import shutil

    import yaml

    docs = tmp_path / "docs"
    shutil.copytree(DOCS, docs)
    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())
    config["docs_dir"] = str(docs)
    config["hooks"] = [str(ROOT / h) for h in config["hooks"]]
    config["plugins"][1]["mkdocstrings"]["handlers"]["python"]["paths"] = [str(ROOT)]
    for extension in config["markdown_extensions"]:
        if isinstance(extension, dict) and "pymdownx.snippets" in extension:
            extension["pymdownx.snippets"]["base_path"] = [str(ROOT)]
    path = tmp_path / "mkdocs.yml"
    path.write_text(yaml.safe_dump(config))
    clean = _build_docs(path)
    assert clean.returncode == 0, clean.stderr[-2000:]
    (docs / "getting-started.md").write_text((docs / "getting-started.md").read_text() + "\n[a page](no-such-page.md)\n")
    planted = _build_docs(path)
    assert planted.returncode != 0
    assert "no-such-page.md" in planted.stderr and "WARNING" in planted.stderr


def test_included_line_ranges_end_where_a_section_ends():
    """A ``--8<-- "file:a:b"`` include starts and stops at a paragraph's edge (a blank line or a heading), never inside
    a table: a results file that gains rows moves its sections, and a stale range would cut a table or show another one."""
    ranges = []
    for page in DOCS.rglob("*.md"):
        for path, start, end in re.findall(r'--8<-- "([^":]+):(\d+):(\d+)"', page.read_text(encoding="utf-8")):
            lines = [*(ROOT / path).read_text(encoding="utf-8").splitlines(), ""]
            first, last = int(start), int(end)
            ranges.append(path)
            assert first == 1 or not lines[first - 2].strip(), f"{page.name}: {path}:{start}:{end} starts inside a paragraph"
            edge = not lines[last - 1].strip() or not lines[last].strip() or lines[last].startswith("#")
            assert edge, f"{page.name}: {path}:{start}:{end} stops before {lines[last][:60]!r}"
    assert ranges, "no ranged include found: the check above would pass vacuously"
