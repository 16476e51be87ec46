"""MkDocs hooks: the site shows the repository's own pictures (the quickstart's result, the benchmark
figures) from where they are committed, rather than from copies under ``docs/`` that could drift; and
the docstrings' Sphinx roles (``:class:`~dwgf.priors.LatentPrior```) read as plain code names."""

from __future__ import annotations

import re
from pathlib import Path

from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parents[1]
PICTURES = ["examples/*.png", "benchmarks/results/*.png"]


def on_files(files, config):
    for pattern in PICTURES:
        for path in sorted(ROOT.glob(pattern)):
            files.append(File(str(path.relative_to(ROOT)), str(ROOT), config["site_dir"], config["use_directory_urls"]))
    return files


ROLE = re.compile(r":(?:class|meth|func|mod|attr|data|obj|exc):(?=<code>)")
SHORT = re.compile(r"<code>~(?:[A-Za-z_][A-Za-z0-9_]*\.)+([A-Za-z_][A-Za-z0-9_]*)</code>")


def on_post_page(output, page, config):
    """``:class:<code>~dwgf.priors.LatentPrior</code>`` in rendered docstrings becomes ``<code>LatentPrior</code>``."""
    return SHORT.sub(r"<code>\1</code>", ROLE.sub("", output))


README_LINK = re.compile(r"\]\((?!https?://|#)([^)]+)\)")


def readme_for_site() -> str:
    """README.md as the site's home page (docs/index.md is a stub): links into docs/ lose their prefix, links to
    other files of the repository (CONTRIBUTING.md) keep their text without the link; pictures stay where committed."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")

    def link(match: re.Match) -> str:
        target = match.group(1)
        if target.startswith("docs/"):
            return f"]({target[len('docs/'):]})"
        if any(target.startswith(p.split("*")[0]) for p in PICTURES):
            return match.group(0)
        return "]\x00"  # a repository file the site does not hold: the text without the link (below)

    text = README_LINK.sub(link, text)
    return re.sub(r"\[([^\]]+)\]\x00", r"\1", text)


def on_page_markdown(markdown, page, config, files):
    """The home page is README.md, so the two never disagree."""
    if page.file.src_uri == "index.md":
        return readme_for_site()
    return markdown
