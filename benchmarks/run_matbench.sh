#!/usr/bin/env bash
# The MatBench table with the full protocol, unattended, in parts (see benchmarks/README.md, "Protocol"):
# 3 seeds (inner split + initialisation), patience 200, epoch cap 2000 (each fit records whether it hit it),
# every network fit's loss (regressors) and readout chosen on inner-validation scores (--select), network
# classifiers' decision thresholds chosen on the same inner split (--threshold validation), all 13
# tasks (log_gvrh, log_kvrh, perovskites, mp_gap, mp_is_metal, mp_e_form from their composition-only copies).
# About 196 h on 2 cores by benchmarks/estimate_protocol_time.py -- an ESTIMATE scaled from recorded fit
# times and calibrated on the finished jobs' logged wall times -- so the jobs are packed into parts
# (benchmarks/matbench_plan.tsv, written by that script): a part is two 1-thread processes of at most 2.5
# estimated hours each, i.e. one 3-hour window on 2 cores (one seed and fold of the mp_gap / mp_e_form
# networks is estimated above that on its own). Parts 1-22 are the seven tasks with structures (the main
# table; 1-9 the jobs run or started before the calibration, 10-22 the rest), 23-36 the four smaller
# composition-only tasks, 37-75 mp_gap and mp_e_form, 76-77 seed ensembles of 5 nets ('<model> x5': --ensemble 5,
# grown from each fit's selected net) of every network model of the tasks with at most 1000 samples (steels,
# jdft2d). Finished jobs are skipped on a rerun, so an interrupted part can simply be started again. After
# each part (or list of jobs) the report is rewritten.
#   bash benchmarks/run_matbench.sh list [results folder] # the parts, their tasks, estimates and finished jobs
#   bash benchmarks/run_matbench.sh 1                     # one part (also a range: 1-5, or: all)
#   bash benchmarks/run_matbench.sh 1-5 [results folder]  # default benchmarks/results
#   JOBS="p05s1j03 p05s1j05" bash benchmarks/run_matbench.sh jobs [results folder]  # these jobs, one after another
#   WORKERS=2 JOBS="p03s1j00 p03s2j01" bash benchmarks/run_matbench.sh jobs   # one process per (job, seed), 2 at a time
#   WORKERS=16 bash benchmarks/run_matbench.sh rest   # every unfinished job, one process per (job, seed), 16 at a time
# With WORKERS, each seed of a job is its own 1-thread process writing to jobs/<job>/seed<S>/ (with its own done
# file); the job's done file follows once all its seeds are. Same fits as the job in one process (a seed's inner
# split and initialisation depend on the seed only), packed finer: for a machine with more cores than queues, or
# to fill two cores with the seeds of fewer jobs. The report merges the seed folders like the jobs of a task.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
PLAN=${PLAN:-benchmarks/matbench_plan.tsv}
WHICH=${1:-list}
RESULTS=${2:-benchmarks/results}
OUT=$RESULTS/matbench_seeds/jobs
# --resume: a job stopped halfway (a killed process, a machine given back) starts again after its last finished
# fit, and a fit stopped during its selection after its last finished candidate (each candidate is pickled under
# <out>/checkpoints/ as it is done, removed once the fit is recorded): the largest unit lost is one candidate's
# training (the plan's largest fits, mp_e_form selections estimated at 4.1 h, have 6 candidates: ~0.7 h each)
PROTOCOL=(--select --threshold validation --max-epochs 2000 --patience 200 --threads 1 --resume)
# the forests' features of a task, featurized by its first job and read by the others (a task's folds are jobs of
# their own on the composition-only tasks); not results, ignored by git
CACHE=(--feature-cache "$RESULTS/matbench_seeds/features")
read -r -a EXTRA <<< "${EXTRA_ARGS:-}"  # e.g. EXTRA_ARGS="--max-epochs 3" for a dry run (later flags win)
export MATMINER_DATA=${MATMINER_DATA:-$PWD/../shared/data/matbench}

last=$(awk -F'\t' '!/^#/ { if ($1 > m) m = $1 } END { print m }' "$PLAN")
case $WHICH in
    list)
        finished=" $(cd "$OUT" 2>/dev/null && for d in */done; do [[ -f $d ]] && printf '%s ' "${d%/done}"; done; true) "
        awk -F'\t' -v finished="$finished" '!/^#/ { k = $1 " slot " $2; h[k] += $9 / 3600; t[k] = t[k] " " $4 "/" $6
                n[k]++; if (index(finished, " " $3 " ")) d[k]++ }
            END { for (k in h) printf "part %s: %.2f h estimated, %d/%d jobs done:%s\n", k, h[k], d[k], n[k], t[k] }' \
            "$PLAN" | sort -n -k2
        awk -F'\t' -v finished="$finished" '!/^#/ { n++; if (index(finished, " " $3 " ")) d++; else left += $9 / 3600 }
            END { printf "%d/%d jobs done; the others %.1f process-hours estimated\n", d, n, left }' "$PLAN"
        exit 0 ;;
    all) first=1; end=$last ;;
    jobs)
        [[ -n ${JOBS:-} ]] || { echo "jobs: name them, e.g. JOBS=\"p05s1j03 p05s1j06\" $0 jobs" >&2; exit 2; }
        for job in $JOBS; do
            awk -F'\t' -v j="$job" '!/^#/ && $3 == j { found = 1 } END { exit !found }' "$PLAN" \
                || { echo "jobs: $job is not a job of $PLAN" >&2; exit 2; }
        done ;;
    rest)  # every job of the plan without a done file, one process per (job, seed), $WORKERS (default 2) at a time
        JOBS=$(awk -F'\t' '!/^#/ { print $3 }' "$PLAN" | while read -r job; do
            [[ -f $OUT/$job/done ]] || printf '%s ' "$job"; done)
        [[ -n $JOBS ]] || { echo "rest: every job of $PLAN is done"; exit 0; }
        WHICH=jobs; WORKERS=${WORKERS:-2} ;;
    *-*) first=${WHICH%-*}; end=${WHICH#*-} ;;
    *) first=$WHICH; end=$WHICH ;;
esac

run_one() {  # run_one <dir> <task> <composition_only> <model> <seeds> <folds> [flags]: one runner call into <dir>
    local dir=$1 task=$2 comp=$3 model=$4 seeds=$5 folds=$6 flags=${7:-} extra=() more=()
    mkdir -p "$dir"
    [[ $comp == 1 ]] && extra=(--composition-only)
    # the plan's flags column: what a job adds to PROTOCOL (later flags win), written by estimate_protocol_time.py --
    # the composition-only tasks' protocol (patience and cap in optimizer steps, L1 with both readouts) and the
    # loss grids that recorded selections narrowed
    read -r -a more <<< "$flags"
    extra+=("${more[@]}")
    if [[ $model =~ ^(.+)\ x([0-9]+)$ ]]; then  # '<model> xK': a seed ensemble of K nets grown from the selected one
        model=${BASH_REMATCH[1]}
        extra+=(--ensemble "${BASH_REMATCH[2]}" --selected-from "$OUT")  # reusing the single-net jobs' selections
    fi
    # shellcheck disable=SC2086  # seeds and folds are space-separated lists
    "$PY" -m sklearn_atomsets matbench --tasks "$task" --models "$model" --seeds $seeds --folds $folds \
        "${PROTOCOL[@]}" "${CACHE[@]}" "${extra[@]}" "${EXTRA[@]}" --out "$dir" </dev/null >"$dir/log.txt" 2>&1 && touch "$dir/done"
}

named_jobs() {  # the plan's lines of the jobs named in $JOBS
    awk -F'\t' -v jobs=" $JOBS " '!/^#/ && index(jobs, " " $3 " ")' "$PLAN"
}

run_seeds() {  # the plan's jobs named in $JOBS, one process per (job, seed), $WORKERS at a time
    local job task comp model seeds folds seed flags
    while IFS=$'\t' read -r _ _ job task comp model seeds folds _ flags; do
        if [[ -f $OUT/$job/done ]]; then echo "skip $job (done)"; continue; fi
        for seed in $seeds; do
            local dir=$OUT/$job/seed$seed
            if [[ -f $dir/done ]]; then echo "skip $job seed $seed (done)"; continue; fi
            while (( $(jobs -rp | wc -l) >= WORKERS )); do wait -n || true; done
            echo "start $job seed $seed: $task $model folds $folds"
            { run_one "$dir" "$task" "$comp" "$model" "$seed" "$folds" "$flags" || echo "FAILED $job seed $seed (see $dir/log.txt)"; } &
        done
    done < <(named_jobs)
    wait
    local failed=0
    while IFS=$'\t' read -r _ _ job _ _ _ seeds _ _; do
        [[ -f $OUT/$job/done ]] && continue
        for seed in $seeds; do [[ -f $OUT/$job/seed$seed/done ]] || { failed=1; continue 2; }; done
        touch "$OUT/$job/done"
    done < <(named_jobs)
    return $failed
}

run_slot() {  # the jobs of one part's slot (or, for part "jobs", the plan's jobs named in $JOBS), in turn
    local part=$1 slot=$2 failed=0
    while IFS=$'\t' read -r _ _ job task comp model seeds folds _ flags; do
        local dir=$OUT/$job
        if [[ -f $dir/done ]]; then echo "skip $job (done)"; continue; fi
        echo "start $job: $task $model seeds $seeds folds $folds"
        run_one "$dir" "$task" "$comp" "$model" "$seeds" "$folds" "$flags" || { echo "FAILED $job (see $dir/log.txt)"; failed=1; }
    done < <(awk -F'\t' -v p="$part" -v s="$slot" -v jobs=" ${JOBS:-} " \
        '!/^#/ && (p == "jobs" ? index(jobs, " " $3 " ") : $1 == p && $2 == s)' "$PLAN")
    return $failed
}

start=$(date +%s)
status=0
if [[ $WHICH == jobs ]]; then
    if [[ ${WORKERS:-1} =~ ^[0-9]+$ ]] && (( ${WORKERS:-1} > 1 )); then run_seeds || status=1
    elif [[ ${WORKERS:-1} == 1 ]]; then run_slot jobs - || status=1
    else echo "jobs: WORKERS must be a whole number of processes, got '$WORKERS'" >&2; exit 2; fi
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
