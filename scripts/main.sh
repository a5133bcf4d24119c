#!/usr/bin/env bash
# Set-up + the main job, from a fresh clone: what the README's main command runs.
# MatBench steels, official folds: featurize V0 -> AtomSets-V0 with the estimators' default loss (L1, the
# loss inner validation chose in 714 of 855 recorded regression fits) beside the AutoMatminer-style baseline
# (AMM-style: matminer descriptors + random forest) on the same folds -> fold scores + leaderboard anchors.
# Arguments replace that choice (e.g. --tasks matbench_dielectric --models AtomSets-V1 MLP-f).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q -c constraints-cpu.txt -e .
.venv/bin/pip install -q --no-deps matbench==0.6
if [[ $# -eq 0 ]]; then
    set -- --models AtomSets-V0 AMM-style --loss mae
fi
.venv/bin/python -m sklearn_atomsets matbench "$@"
