#!/usr/bin/env bash
# The committed MatBench table in one unattended run on a 2-core machine (see README.md):
# two processes side by side, one torch thread each, then the set2set variants, then the report.
#   bash benchmarks/run_matbench.sh [results folder]   (default benchmarks/results)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RESULTS=${1:-benchmarks/results}
OUT=$RESULTS/matbench
COMMON=(--max-epochs 500 --patience 100 --loss mae --threads 1 --out "$OUT")
start=$(date +%s)
"$PY" -m sklearn_atomsets matbench --tasks matbench_dielectric matbench_steels matbench_jdft2d \
    --models all "${COMMON[@]}" &
"$PY" -m sklearn_atomsets matbench --tasks matbench_expt_gap matbench_expt_is_metal matbench_glass matbench_phonons \
    --models all "${COMMON[@]}" &
wait
# the weighted set2set readout as a variant of the set models, where the data is small or composition-only
"$PY" -m sklearn_atomsets matbench --tasks matbench_steels matbench_jdft2d matbench_expt_gap \
    --models AtomSets AtomSets-V0 AtomSets-V1 AtomSets-V0+V1 --readout set2set "${COMMON[@]}" &
"$PY" -m sklearn_atomsets matbench --tasks matbench_dielectric \
    --models AtomSets-V1 AtomSets-V0+V1 --readout set2set "${COMMON[@]}" &
wait
"$PY" benchmarks/report.py "$OUT" "$RESULTS"
echo "MatBench wall time: $(( $(date +%s) - start )) s"
