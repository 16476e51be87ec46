#!/usr/bin/env bash
# Builds the documentation site strictly: any warning (a broken link, a docstring entry that does not match its
# signature, a missing reference) fails the build. No --quiet: it would drop the warnings before --strict counts them.
# Used by .ci/run; tests/test_docs.py proves that this command fails on a planted warning.
#   bash scripts/build_docs.sh [SITE_DIR]     (default: a temporary folder)
set -euo pipefail
cd "$(dirname "$0")/.."
site="${1:-$(mktemp -d)}"
NO_MKDOCS_2_WARNING=1 mkdocs build --strict --config-file "${DWGF_MKDOCS_CONFIG:-mkdocs.yml}" --site-dir "$site"
