"""MkDocs hooks: the site shows the repository's own pictures (the quickstart's result, the benchmark
figures) from where they are committed, rather than from copies under ``docs/`` that could drift."""

from __future__ import annotations

from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ["examples/*.png", "benchmarks/results/*.png"]


def on_files(files, config):
    for pattern in PICTURES:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files
