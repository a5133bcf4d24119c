#!/usr/bin/env bash
# Set-up + the main job, from a fresh clone: what the README's main command runs.
# MatBench steels, official folds: featurize V0 -> AtomSets-V0 -> five fold scores + anchors.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints-cpu.txt -e .
.venv/bin/pip install -q --no-deps matbench==0.6
.venv/bin/python -m sklearn_atomsets matbench "$@"
