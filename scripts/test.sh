#!/usr/bin/env bash
# Set-up + tests, from a fresh clone: what the README's test command runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints-cpu.txt -e ".[megnet,test,docs,dask,chgnet]"
# The official MatBench folds ship in the 'matbench' package, whose pins are years old.
.venv/bin/pip install -q --no-deps matbench==0.6
.venv/bin/sphinx-build -W -q -b html docs docs/_build/html
.venv/bin/python -m pytest
