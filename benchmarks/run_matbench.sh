#!/usr/bin/env bash
# The MatBench table with the full protocol, unattended, in parts (see benchmarks/README.md, "Protocol"):
# 3 seeds (inner split + initialisation), patience 200, epoch cap 2000 (each fit records whether it hit it),
# every network fit's loss (regressors) and readout chosen on inner-validation scores (--select), network
# classifiers' decision thresholds chosen on the same inner split (--threshold validation), all 13
# tasks (log_gvrh, log_kvrh, perovskites, mp_gap, mp_is_metal, mp_e_form from their composition-only copies).
# About 107 h on 2 cores by benchmarks/estimate_protocol_time.py -- an ESTIMATE scaled from recorded fit
# times -- so the jobs are packed into parts (benchmarks/matbench_plan.tsv, written by that script): a part
# is two 1-thread processes of at most 2.5 estimated hours each, i.e. one 3-hour window on 2 cores.
# Parts 1-9 are the seven tasks with structures (the main table; 1-5 the MEGNet parent's models and the
# baselines, 6-9 the CHGNet parent's). Finished jobs are skipped on a rerun, so an interrupted part can
# simply be started again. After each part (or list of jobs) the report is rewritten.
#   bash benchmarks/run_matbench.sh list                  # the parts, their tasks and estimates
#   bash benchmarks/run_matbench.sh 1                     # one part (also a range: 1-5, or: all)
#   bash benchmarks/run_matbench.sh 1-5 [results folder]  # default benchmarks/results
#   JOBS="p05s1j03 p05s1j05" bash benchmarks/run_matbench.sh jobs [results folder]  # these jobs, one after another
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PLAN=${PLAN:-benchmarks/matbench_plan.tsv}
WHICH=${1:-list}
RESULTS=${2:-benchmarks/results}
OUT=$RESULTS/matbench_seeds/jobs
PROTOCOL=(--select --threshold validation --max-epochs 2000 --patience 200 --threads 1)
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"  # e.g. EXTRA_ARGS="--max-epochs 3" for a dry run (later flags win)
export MATMINER_DATA=${MATMINER_DATA:-$PWD/../shared/data/matbench}

last=$(awk -F'\t' '!/^#/ { if ($1 > m) m = $1 } END { print m }' "$PLAN")
case $WHICH in
    list)
        awk -F'\t' '!/^#/ { h[$1 " slot " $2] += $9 / 3600; t[$1 " slot " $2] = t[$1 " slot " $2] " " $4 "/" $6 }
            END { for (k in h) printf "part %s: %.2f h estimated:%s\n", k, h[k], t[k] }' "$PLAN" | sort -n -k2
        exit 0 ;;
    all) first=1; end=$last ;;
    jobs)
        [[ -n ${JOBS:-} ]] || { echo "jobs: name them, e.g. JOBS=\"p05s1j03 p05s1j06\" $0 jobs" >&2; exit 2; }
        for job in $JOBS; do
            awk -F'\t' -v j="$job" '!/^#/ && $3 == j { found = 1 } END { exit !found }' "$PLAN" \
                || { echo "jobs: $job is not a job of $PLAN" >&2; exit 2; }
        done ;;
    *-*) first=${WHICH%-*}; end=${WHICH#*-} ;;
    *) first=$WHICH; end=$WHICH ;;
esac

run_slot() {  # the jobs of one part's slot (or, for part "jobs", the plan's jobs named in $JOBS), in turn
    local part=$1 slot=$2 failed=0
    while IFS=$'\t' read -r _ _ job task comp model seeds folds _; do
        local dir=$OUT/$job
        if [[ -f $dir/done ]]; then echo "skip $job (done)"; continue; fi
        mkdir -p "$dir"
        local extra=()
        [[ $comp == 1 ]] && extra=(--composition-only)
        echo "start $job: $task ${extra[*]} $model seeds $seeds folds $folds"
        # shellcheck disable=SC2086  # seeds and folds are space-separated lists
        if "$PY" -m sklearn_atomsets matbench --tasks "$task" --models "$model" --seeds $seeds --folds $folds \
                "${PROTOCOL[@]}" "${extra[@]}" "${EXTRA[@]}" --out "$dir" </dev/null >"$dir/log.txt" 2>&1; then
            touch "$dir/done"
        else
            echo "FAILED $job (see $dir/log.txt)"; failed=1
        fi
    done < <(awk -F'\t' -v p="$part" -v s="$slot" -v jobs=" ${JOBS:-} " \
        '!/^#/ && (p == "jobs" ? index(jobs, " " $3 " ") : $1 == p && $2 == s)' "$PLAN")
    return $failed
}

start=$(date +%s)
status=0
if [[ $WHICH == jobs ]]; then
    run_slot jobs - || status=1
    echo "jobs ${JOBS:-} wall time: $(( $(date +%s) - start )) s"
    "$PY" benchmarks/report.py "$RESULTS/matbench_seeds" "$RESULTS"
    exit $status
fi
for ((part = first; part <= end; part++)); do
    part_start=$(date +%s)
    run_slot "$part" 1 & one=$!
    run_slot "$part" 2 & two=$!
    wait "$one" || status=1
    wait "$two" || status=1
    echo "part $part wall time: $(( $(date +%s) - part_start )) s"
    "$PY" benchmarks/report.py "$RESULTS/matbench_seeds" "$RESULTS"
done
echo "MatBench parts $first-$end wall time: $(( $(date +%s) - start )) s"
exit $status
