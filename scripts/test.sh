#!/usr/bin/env bash
# Set-up + tests, from a fresh clone: what the README's test command runs.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints-cpu.txt -e ".[megnet,test,docs,dask,chgnet,sevennet]"
# The official MatBench folds ship in the 'matbench' package, whose pins are years old.
.venv/bin/pip install -q --no-deps matbench==0.6
.venv/bin/sphinx-build -W -q -b html docs docs/_build/html
# One test process per core, at most 4 (each loads torch, TensorFlow and the parents: ~2 GB);
# pytest-xdist hands the tests out one by one, so the slow modules do not queue behind each other.
WORKERS=$(.venv/bin/python -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))")
.venv/bin/python -m pytest -n "$WORKERS" "$@"
