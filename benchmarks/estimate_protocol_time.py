"""An ESTIMATE of the full protocol's wall time, scaled from the fit times a run recorded.

    python benchmarks/estimate_protocol_time.py [results folder] [--seeds 3] [--patience 200] [--cap 2000]
    python benchmarks/estimate_protocol_time.py --plan benchmarks/matbench_plan.tsv   # also write the parts
    python benchmarks/estimate_protocol_time.py --plan benchmarks/matbench_plan.tsv --keep-parts 5
        # parts 1-5 of the existing plan kept as they are (their finished jobs keep their folders)
    python benchmarks/estimate_protocol_time.py --plan ... --keep-parts 9 --drop-unstarted --forest-factor 2.7 --net-factor 1.7
        # of parts 1-9 only the jobs already run (or with a seed run) kept; everything else packed
        # again from the estimates times these factors (see "Calibration")
    python benchmarks/estimate_protocol_time.py --plan ... --keep-parts 75 ... --ensemble 5 --ensemble-max-samples 1000
        # the plan as it is, plus seed ensembles of 5 nets of every network model of the tasks with
        # at most 1000 samples, in new parts

Reads the single-seed results (``benchmarks/results/matbench/<task>.json``, and the runs of more
models in its folders of :data:`PARENT_FOLDERS`: other parents, sets plus descriptors): per fit
``fit_s``, ``featurize_s``, ``epochs_run``, ``best_epoch``, and per selection candidate where a run selected) and scales them to the protocol of
``benchmarks/run_matbench.sh``: ``--seeds`` seeds, patience ``--patience``, epoch cap
``--cap`` and, for every network fit, the selection candidates of ``--select`` (regressors:
loss mse/mae/huber x readout mean/set2set = 6 fits; classifiers: 2 readouts; MLP-f: 3 losses
or 1). Nothing here is measured: it is arithmetic on measured times under these assumptions,
printed with the numbers.

- Seconds per epoch of a model are its recorded ``fit_s / epochs_run`` (mean readout); the
  set2set readout's are its recorded ones where the run has them, else the mean readout's
  times the median set2set/mean ratio of the runs that have both. A fold that recorded
  selection candidates (readouts) is estimated from each candidate's own times and epochs,
  times the 3 losses where only readouts were candidates.
- Epochs of a new fit: ``best + patience``, capped, where ``best`` is the recorded best epoch
  of a fit that stopped early, and twice it (at most the cap) for a fit that hit the old cap.
- A network's featurizer runs once per fold (the runner reuses its output across seeds); a
  forest baseline's runs once per task, on its distinct inputs (a fold's featurization, recorded
  as the whole task's, once; for the composition-only tasks per distinct formula, and not again
  for a task on another's inputs: ``SAME_INPUTS``; the forest with the parent's features beside
  matminer's computes only the parent's), and its forests are fitted once per seed and fold.
- A seed ensemble of K nets grown from the selected net (``--ensemble K``): the single net's
  estimate times (candidates + K - 1) / candidates.
- Composition-only tasks (no recorded run): per-row, per-epoch times and epochs of the
  composition task of the same kind (expt_gap for regression, expt_is_metal for
  classification), scaled linearly with the number of rows.

Calibration: with ``--plan``, every finished job of that plan whose logs say its wall time
(``results/matbench_seeds/jobs/<job>/log.txt``, and ``seed<S>/log.txt`` for a job run with
``WORKERS``) is compared with this estimate for its seeds and folds, and the ratio of the sums
is printed for the forest baselines and the networks apart (measured, under whatever else ran
beside them). ``--forest-factor`` / ``--net-factor`` scale the estimates of the jobs being
packed; the plan's header records them.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics
from pathlib import Path

from sklearn_atomsets.matbench import parse_model_label, train_steps  # train_steps: the runner's conversion (skorch's inner split)

HERE = Path(__file__).resolve().parent

# rows of the six tasks run from composition_only/ (official MatBench v0.1 sizes) and their distinct formulas
# (polymorphs share one; counted in ../shared/data/matbench/composition_only, checked by tests/test_plan_estimate.py):
# the forests' featurizer runs once per distinct formula (the runner's _featurize_once)
COMPOSITION_ONLY = {
    "matbench_log_gvrh": (10987, 10432, "regression"),
    "matbench_log_kvrh": (10987, 10432, "regression"),
    "matbench_perovskites": (18928, 9646, "regression"),
    "matbench_mp_gap": (106113, 87262, "regression"),
    "matbench_mp_is_metal": (106113, 87262, "classification"),
    "matbench_mp_e_form": (132752, 106250, "regression"),
}
# composition-only tasks on another's inputs (same formulas, same order): their forests read its features
# (the runner's feature cache is keyed by the inputs, not the task)
SAME_INPUTS = {"matbench_mp_is_metal": "matbench_mp_gap", "matbench_log_kvrh": "matbench_log_gvrh"}
COMPOSITION_MODELS = ("AtomSets", "AtomSets-V0", "AMM-style", "AMM-style + MEGNet")
REFERENCE = {"regression": "matbench_expt_gap", "classification": "matbench_expt_is_metal"}
#: The composition-only tasks' protocol (issue 35, item 3; its accuracy cost measured on a subset by
#: benchmarks/composition_protocol.py): one seed; patience and cap in optimizer steps, the steps the full
#: protocol gives the reference task expt_gap (26 steps an epoch: patience 200 epochs ~ 5200 steps, cap
#: 2000 epochs ~ 52000); of the selection candidates the L1 loss (expt_gap's full-protocol selections chose
#: it 27 times in 30) with both readouts. run_matbench.sh passes the same numbers.
COMPOSITION_PROTOCOL = {"seeds": 1, "patience_steps": 5000, "max_steps": 50000, "losses": 1}


def _is_forest(label):
    """Whether a results label or plan model ('<model> x5' too) is a forest baseline (the runner's ModelSpec says)."""
    return not parse_model_label(label).spec.is_network


def _is_mlp(label):
    """Whether it is an MLP on the readout vector (its selection has no readouts)."""
    return parse_model_label(label).spec.estimator == "mlp"


def _forest_featurize_s(models, name):
    """A forest's featurizing time of one fold's whole task (a first-pass fold's featurize_s), less what the
    other forest's matminer sets take where it adds the parent's features to them: the runner computes
    those blocks once for both (``_featurize_once``)."""
    mean = statistics.mean(f["featurize_s"] for f in models[name]["folds"])
    plain = [n for n in models if _is_forest(n) and not parse_model_label(n).spec.megnet_features]
    if parse_model_label(name).spec.megnet_features and plain:
        mean = max(0.0, mean - statistics.mean(f["featurize_s"] for f in models[plain[0]]["folds"]))
    return mean


def steps_per_epoch(n_rows):
    """:func:`train_steps` of a training fold of an ``n_rows`` task (4/5 of the rows)."""
    return train_steps(n_rows - math.ceil(n_rows / 5))


def step_epochs(steps, n_rows):
    """``steps`` optimizer steps in epochs of an ``n_rows`` task (at least 1)."""
    return max(1, math.ceil(steps / steps_per_epoch(n_rows)))


def _new_epochs(fit, old_cap, patience, cap):
    best = fit["best_epoch"]
    if fit["epochs_run"] >= old_cap:
        best = 2 * best
    return min(cap, best + patience)


def _net_estimate(folds, s2s_folds, s2s_ratio, kind, is_mlpf, old_cap, args, n_loss=None, featurize_scale=1.0):
    """Seconds of one model, all folds and seeds, with its selection candidates (``n_loss`` losses
    each: default the 3 of the default grid for regressors); the featurizer's time times ``featurize_scale``."""
    n_loss = n_loss or (3 if kind == "regression" else 1)
    total = 0.0
    for k, f in enumerate(folds):
        candidates = f.get("selection", {}).get("candidates")
        if candidates:  # a selecting run: each candidate's own time per epoch and epochs
            losses = 1 if any("loss" in c["config"] for c in candidates) else n_loss
            fits = losses * sum(c["fit_s"] / c["epochs_run"] * _new_epochs(c, old_cap, args.patience, args.cap)
                                for c in candidates)
            total += args.seeds * fits + featurize_scale * f["featurize_s"]
            continue
        per_epoch = f["fit_s"] / f["epochs_run"]
        epochs = _new_epochs(f, old_cap, args.patience, args.cap)
        mean_s = per_epoch * epochs
        if is_mlpf:
            fits = n_loss * mean_s
        else:
            if s2s_folds:
                g = s2s_folds[k]
                s2s = g["fit_s"] / g["epochs_run"] * _new_epochs(g, old_cap, args.patience, args.cap)
            else:
                s2s = per_epoch * s2s_ratio * epochs
            fits = n_loss * (mean_s + s2s)
        total += args.seeds * fits + featurize_scale * f["featurize_s"]
    return total


# first-pass runs of the same tasks with more models: other parents (their models' names say which) and sets
# plus descriptors (issue 33): the one place that adds models to the plan
PARENT_FOLDERS = ("chgnet", "sevennet", "hybrid")


def estimate(folder, args):
    files = {p.stem: json.loads(p.read_text()) for p in Path(folder).glob("matbench_*.json")}
    for sub in PARENT_FOLDERS:
        for p in Path(folder, sub).glob("matbench_*.json"):
            other = json.loads(p.read_text())
            if p.stem not in files or other["settings"]["max_epochs"] != files[p.stem]["settings"]["max_epochs"]:
                raise SystemExit(f"{p}: no run of its task in {folder} with the same epoch cap to estimate beside")
            files[p.stem]["models"].update(other["models"])
    ratios = []
    for r in files.values():
        for name, m in r["models"].items():
            s2s = r["models"].get(f"{name} (set2set)")
            if s2s and m["folds"][0].get("epochs_run"):
                a = sum(f["fit_s"] for f in m["folds"]) / sum(f["epochs_run"] for f in m["folds"])
                b = sum(f["fit_s"] for f in s2s["folds"]) / sum(f["epochs_run"] for f in s2s["folds"])
                ratios.append(b / a)
    s2s_ratio = statistics.median(ratios)
    rows = []  # (task, model, seconds)
    once = getattr(args, "featurize_once", True)  # False: the forests' featurization as jobs before 2026-12-03 ran it
    for task, r in sorted(files.items()):
        if r.get("composition_only"):
            continue
        kind = "regression" if r["metric"] == "mae" else "classification"
        old_cap = r["settings"]["max_epochs"]
        for name, m in r["models"].items():
            if name.endswith("(set2set)") or not m["folds"]:
                continue
            if _is_forest(name):  # featurized once for the task (each fold's featurize_s featurized all)
                featurize = _forest_featurize_s(r["models"], name) if once else sum(f["featurize_s"] for f in m["folds"])
                seconds = featurize + args.seeds * sum(f["fit_s"] for f in m["folds"])
            else:
                s2s = r["models"].get(f"{name} (set2set)", {}).get("folds")
                grid = getattr(args, "loss_grids", {}).get(task)
                seconds = _net_estimate(m["folds"], s2s, s2s_ratio, kind, _is_mlp(name), old_cap, args,
                                        n_loss=len(grid) if grid and kind == "regression" else None)
            rows.append((task, name, seconds))
            if args.ensemble > 1 and r["n_samples"] <= args.ensemble_max_samples and not _is_forest(name):
                if kind == "classification":  # thresholds are chosen on a single net's inner split
                    raise SystemExit(f"{task}: seed ensembles of classifiers cannot have a validation threshold")
                losses = len(grid) if grid else 3
                n = losses if _is_mlp(name) else 2 * losses  # the selection's candidates: losses (x readouts)
                rows.append((task, f"{name} x{args.ensemble}", seconds * (n + args.ensemble - 1) / n))
    for task, (n_rows, distinct, kind) in COMPOSITION_ONLY.items():
        ref = files.get(REFERENCE[kind])
        if ref is None:
            continue
        scale = n_rows / ref["n_samples"]
        steps = args.composition_protocol == "steps"
        seeds = COMPOSITION_PROTOCOL["seeds"] if steps else args.seeds
        for name in COMPOSITION_MODELS:
            m = ref["models"][name]
            if _is_forest(name):  # featurized once, per distinct formula; fitted per fold
                if once:
                    per_row = _forest_featurize_s(ref["models"], name) / ref["n_samples"]
                    featurize = 0.0 if task in SAME_INPUTS else per_row * distinct
                else:
                    featurize = sum(f["featurize_s"] for f in m["folds"]) / ref["n_samples"] * n_rows
                seconds = featurize + scale * seeds * sum(f["fit_s"] for f in m["folds"])
            elif steps:
                # patience and cap in steps: the same steps as on the reference task, whose recorded time per
                # step stands for this task's (its per-epoch overhead, over fewer steps, makes this an upper
                # bound); the featurizer's time grows with the rows
                n_ref = ref["n_samples"]
                ref_args = argparse.Namespace(seeds=seeds, patience=step_epochs(COMPOSITION_PROTOCOL["patience_steps"], n_ref),
                                              cap=step_epochs(COMPOSITION_PROTOCOL["max_steps"], n_ref))
                s2s = ref["models"].get(f"{name} (set2set)", {}).get("folds")
                seconds = _net_estimate(m["folds"], s2s, s2s_ratio, kind, False, ref["settings"]["max_epochs"],
                                        ref_args, n_loss=COMPOSITION_PROTOCOL["losses"], featurize_scale=scale)
            else:
                s2s = ref["models"].get(f"{name} (set2set)", {}).get("folds")
                seconds = scale * _net_estimate(m["folds"], s2s, s2s_ratio, kind, False,
                                                ref["settings"]["max_epochs"], args)
            rows.append((task + " (composition only)", name, seconds))
    rows, dropped = pruned(rows, files, getattr(args, "prune_margin", None))
    return rows, s2s_ratio, dropped


LOSSES = ("mse", "mae", "huber")  # the default grid's


def job_results(jobs_dir):
    """Every result file the full-protocol jobs in ``jobs_dir`` wrote, parsed (read once per run)."""
    return [json.loads(path.read_text()) for path in sorted(Path(jobs_dir).glob("*/**/matbench_*.json"))]


def _single_net_fits(results):
    """``(result, model, fit)`` of every fit of a single net (a seed ensemble 'xK' reuses its single
    net's selection and inner split: it is not counted again)."""
    for r in results:
        for name, m in r["models"].items():
            if not re.search(r" x\d+$", name):
                for f in m["folds"]:
                    yield r, name, f


def recorded_losses(results):
    """``{task: Counter of the losses chosen}`` over the single-net selections in the jobs' ``results``."""
    import collections

    out = collections.defaultdict(collections.Counter)
    for r, _, f in _single_net_fits(results):
        loss = f.get("selection", {}).get("chosen", {}).get("loss")
        if loss is not None:
            out[r["task"]][loss] += 1
    return dict(out)


def loss_grids(recorded, min_selections):
    """``{task: the losses kept in its remaining jobs' grid}`` for the tasks with at least ``min_selections``
    selections ``recorded`` (:func:`recorded_losses`): the losses chosen at least once (an
    inner-validation record rules out the others); the other tasks keep the default grid (absent here)."""
    if not min_selections:
        return {}
    return {task: tuple(l for l in LOSSES if counts[l]) for task, counts in recorded.items()
            if sum(counts.values()) >= min_selections and sum(1 for l in LOSSES if counts[l]) < len(LOSSES)}


def job_flags(task, composition_only, grids):
    """The runner flags a plan job adds to run_matbench.sh's protocol (empty: the full protocol as it is)."""
    if composition_only:
        p = COMPOSITION_PROTOCOL
        return (f"--select loss=mae readout=mean,set2set --patience-steps {p['patience_steps']} "
                f"--max-steps {p['max_steps']}")
    if task in grids:
        return f"--select loss={','.join(grids[task])} readout=mean,set2set"
    return ""


def _first_pass_validation(files):
    """``{task: {model: mean inner-validation score over the folds}}`` of the first-pass runs (one seed, the same
    settings for every model of a task), the better of a model's readouts where both ran."""
    out = {}
    for task, r in files.items():
        for name, m in r["models"].items():
            scores = [f.get("validation_score") for f in m["folds"]]
            if not m["folds"] or any(v is None for v in scores):
                continue
            base = name.removesuffix(" (set2set)")
            value = statistics.mean(scores)
            lower = r["metric"] == "mae"
            old = out.setdefault(task, {}).get(base)
            if old is None or (value < old if lower else value > old):
                out[task][base] = value
    return out


def pruned(rows, files, margin):
    """``(kept rows, [(task, model, its score, the task's best, best model)])``: the network models of the
    regression tasks with structures whose first-pass mean inner-validation MAE is more than ``margin``
    (relative) above the task's best model's are dropped from the plan, with their seed ensembles. Only
    inner-validation scores decide (no test fold); the forests have none and are kept."""
    if margin is None:
        return rows, []
    scores = _first_pass_validation(files)
    kept, dropped = [], []
    for task, name, seconds in rows:
        base = name.split(" x")[0] if re.search(r" x\d+$", name) else name
        task_scores = scores.get(task, {})
        if task.endswith("(composition only)") or files.get(task, {}).get("metric") != "mae" or base not in task_scores:
            kept.append((task, name, seconds))
            continue
        best = min(task_scores, key=task_scores.get)
        if task_scores[base] > (1 + margin) * task_scores[best]:
            dropped.append((task, name, task_scores[base], task_scores[best], best))
        else:
            kept.append((task, name, seconds))
    return kept, dropped


def validation_spread(results):
    """How much the ordering of two models by inner-validation MAE moves with the seed: for every pair of
    single-net models of a regression task that the full-protocol jobs' ``results`` ran with the same
    seeds (same inner splits), the standard deviation over seeds of the relative difference of their mean
    inner-validation MAEs, ``(a - b) / b``. Returns ``[(task, a, b, std)]``: the yardstick for
    ``--prune-margin`` (a margin well above the largest std prunes no model the seed could have put first)."""
    import itertools

    per_seed = {}  # (task, model) -> {seed: [validation MAE per fold]}
    for r, name, f in _single_net_fits(results):
        if (r.get("metric") != "mae" or r.get("composition_only") or "validation-selected" in name
                or _is_forest(name)):
            continue
        if f.get("validation_score") is not None and f.get("seed") is not None:
            per_seed.setdefault((r["task"], name), {}).setdefault(f["seed"], {})[f["fold"]] = f["validation_score"]
    out = []
    for (task, a), (task_b, b) in itertools.combinations(sorted(per_seed), 2):
        if task != task_b:
            continue
        seeds = [s for s in per_seed[(task, a)] if s in per_seed[(task, b)]
                 and per_seed[(task, a)][s].keys() == per_seed[(task, b)][s].keys()]
        if len(seeds) < 2:
            continue
        rel = [statistics.mean(per_seed[(task, a)][s].values()) / statistics.mean(per_seed[(task, b)][s].values()) - 1
               for s in seeds]
        out.append((task, a, b, statistics.pstdev(rel)))
    return out


def _family(model):
    return "forests" if _is_forest(model) else "networks"


def _key(task, model):
    """An estimate row's (task, model) as the plan names it: (task, composition_only, model)."""
    return task.replace(" (composition only)", ""), task.endswith("(composition only)"), model


def _by_pair(rows):
    return {_key(t, m): s for t, m, s in rows}


def _job_estimate(per_pair, fields, n_seeds, composition_seeds=None):
    """A plan line's (split fields) estimate: its (task, model)'s, for its share of seeds and folds
    (``n_seeds`` seeds a (task, model), ``composition_seeds`` for the composition-only tasks' if it differs)."""
    _, _, _, task, comp, model, seeds, folds, *_ = fields
    estimated = per_pair.get((task, comp == "1", model))
    n = composition_seeds if comp == "1" and composition_seeds else n_seeds
    return None if estimated is None else estimated * len(seeds.split()) * len(folds.split()) / (n * 5)


def _started(jobs_dir, job):
    """Whether run_matbench.sh finished ``job`` or one of its seeds (``WORKERS``)."""
    folder = Path(jobs_dir, job)
    return (folder / "done").is_file() or any(folder.glob("seed*/done"))


def measured_ratios(plan_lines, jobs_dir, rows, n_seeds, composition_seeds=None):
    """``{family: (measured s, estimated s, n jobs)}`` over the finished jobs of ``plan_lines``
    (split fields) whose every log records a wall time; ``rows`` the estimate's (task, model, s)."""
    per_pair = _by_pair(rows)
    sums = {}
    for fields in plan_lines:
        job, model = fields[2], fields[5]
        folder = Path(jobs_dir, job)
        logs = [folder / "log.txt"] if (folder / "log.txt").is_file() else sorted(folder.glob("seed*/log.txt"))
        estimated = _job_estimate(per_pair, fields, n_seeds, composition_seeds)
        if not (folder / "done").is_file() or not logs or estimated is None:
            continue
        walls = [re.findall(r"^wall time (\d+) s$", p.read_text(), re.M) for p in logs]
        if not all(walls):
            continue
        m, e, n = sums.get(_family(model), (0.0, 0.0, 0))
        sums[_family(model)] = (m + sum(float(w[-1]) for w in walls), e + estimated, n + 1)
    return sums


def plan(rows, seeds, slot_s, first_part=1, composition_seeds=None, grids=None):
    """Jobs packed into parts of two slots (processes) of about ``slot_s`` estimated seconds.

    A (task, model) is one job when its estimate fits a slot, else one job per seed, else
    one per seed and fold (estimated as an equal share). The parts come in three groups,
    each finished before the next starts: the seven tasks with structures (the main
    table), the smaller composition-only tasks, then mp_gap and mp_e_form. Within a group
    jobs are placed largest first into the first slot that still has room (a job larger
    than a slot gets a slot of its own). The composition-only tasks run ``composition_seeds``
    (default ``seeds``). Returns ``[(part, slot, job_id, task, composition_only, model, seeds,
    folds, seconds, flags)]``, ``flags`` the runner flags of :func:`job_flags` (``grids``: its loss grids).
    """
    jobs, all_seeds = [], seeds
    for task, name, seconds in rows:
        comp = task.endswith("(composition only)")
        base = task.replace(" (composition only)", "")
        seeds = composition_seeds if comp and composition_seeds is not None else all_seeds
        if seconds <= slot_s:
            pieces = [(seeds, list(range(5)), seconds)]
        elif seconds / len(seeds) <= slot_s:
            pieces = [([s], list(range(5)), seconds / len(seeds)) for s in seeds]
        else:
            pieces = [([s], [k], seconds / len(seeds) / 5) for s in seeds for k in range(5)]
        for piece_seeds, folds, s in pieces:
            jobs.append((base, comp, name, piece_seeds, folds, s))
    def group(job):
        return 0 if not job[1] else 2 if job[0] in ("matbench_mp_gap", "matbench_mp_e_form") else 1

    jobs.sort(key=lambda j: (group(j), -j[-1]))
    slots = []  # [part, slot, used seconds, jobs]
    for g in sorted({group(j) for j in jobs}):
        group_slots = []
        for job in (j for j in jobs if group(j) == g):
            target = next((sl for sl in group_slots if sl[2] + job[-1] <= slot_s), None)
            if target is None:
                target = [first_part + len(group_slots) // 2, len(group_slots) % 2 + 1, 0.0, []]
                group_slots.append(target)
            target[2] += job[-1]
            target[3].append(job)
        slots += group_slots
        first_part = slots[-1][0] + 1
    out = []
    for part, slot, _, slot_jobs in slots:
        for k, (task, comp, name, piece_seeds, folds, s) in enumerate(slot_jobs):
            job_id = f"p{part:02d}s{slot}j{k:02d}"
            flags = "" if _is_forest(name) else job_flags(task, comp, grids or {})
            out.append((part, slot, job_id, task, comp, name, piece_seeds, folds, s, flags))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", nargs="?", default=HERE / "results" / "matbench")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--patience", type=int, default=200)
    parser.add_argument("--cap", type=int, default=2000)
    parser.add_argument("--plan", default=None, help="write the parts of run_matbench.sh to this TSV file")
    parser.add_argument("--keep-parts", type=int, default=0,
                        help="keep parts 1..K of the existing --plan file as they are (job names, and so the "
                             "folders of finished jobs, unchanged; only their estimates computed again) and pack "
                             "only the (task, model) pairs they lack into parts K+1, ...")
    parser.add_argument("--drop-unstarted", action="store_true",
                        help="of the kept parts, keep only the jobs that are done or have a finished seed (in "
                             "--jobs); the others are packed again with the rest")
    parser.add_argument("--slot-hours", type=float, default=2.5,
                        help="estimated hours per process and part (a part is two processes; 2.5 leaves "
                             "room in a 3-hour window for the estimate's error)")
    parser.add_argument("--forest-factor", type=float, default=1.0,
                        help="multiply the forest baselines' estimates of the jobs being packed by this")
    parser.add_argument("--net-factor", type=float, default=1.0,
                        help="multiply the networks' estimates of the jobs being packed by this")
    parser.add_argument("--ensemble", type=int, default=1, metavar="K",
                        help="also plan each network model of the tasks with at most --ensemble-max-samples "
                             "samples as a seed ensemble of K nets grown from its selected net ('<model> xK': "
                             "run_matbench.sh passes --ensemble K; K-1 fits more than the selection)")
    parser.add_argument("--ensemble-max-samples", type=int, default=1000,
                        help="the largest task (samples) whose networks get the seed ensembles of --ensemble")
    parser.add_argument("--composition-protocol", choices=("steps", "full"), default="full",
                        help="the composition-only tasks' protocol: 'steps' (COMPOSITION_PROTOCOL: one seed, "
                             "patience and cap in optimizer steps, L1 with both readouts) or 'full' (--seeds, "
                             "--patience, --cap and the default grid, as the structure tasks)")
    parser.add_argument("--prune-margin", type=float, default=None, metavar="M",
                        help="drop the network models of the regression tasks with structures whose first-pass "
                             "mean inner-validation MAE is more than M (relative, e.g. 0.1) above the task's "
                             "best model's (and their seed ensembles); they are listed")
    parser.add_argument("--composition-net-factor", type=float, default=None,
                        help="multiply the composition-only tasks' network estimates by this instead of "
                             "--net-factor (calibrated on a full-size fold: see benchmarks/README.md)")
    parser.add_argument("--prune-losses", type=int, default=0, metavar="N",
                        help="for each task with at least N single-net selections recorded by the full-protocol "
                             "jobs (--jobs), the remaining jobs' grid keeps only the losses chosen at least once "
                             "(the plan's flags column passes it to the runner)")
    parser.add_argument("--jobs", default=HERE / "results" / "matbench_seeds" / "jobs",
                        help="where run_matbench.sh keeps the plan's jobs (for the calibration printout)")
    args = parser.parse_args(argv)
    run_results = job_results(args.jobs)
    recorded = recorded_losses(run_results)
    args.loss_grids = loss_grids(recorded, args.prune_losses)
    for task, grid in sorted(args.loss_grids.items()):
        counts = recorded[task]
        print(f"loss grid of {task}'s remaining jobs: {', '.join(grid)} (recorded selections: "
              + ", ".join(f"{l} {counts[l]}" for l in LOSSES) + ")")
    rows, ratio, dropped = estimate(args.folder, args)
    # the jobs already run ran the default grid, no pruning and the forests' featurization once per fold: they are
    # priced (calibration, kept lines) as they ran
    as_run = estimate(args.folder, argparse.Namespace(**{**vars(args), "loss_grids": {}, "prune_margin": None,
                                                         "featurize_once": False}))[0]
    if args.prune_margin is not None:
        spread = sorted(std for *_, std in validation_spread(run_results))
        if spread:
            print(f"pruning margin {args.prune_margin:g}: over seeds, the relative difference of two models' "
                  f"inner-validation MAE has a std of at most {spread[-1]:.3f} (median {statistics.median(spread):.3f}, "
                  f"{len(spread)} pairs of full-protocol jobs)")
    for task, name, value, best, best_name in dropped:
        print(f"pruned: {task} {name}: first-pass inner-validation MAE {value:.4g}, {value / best - 1:+.0%} against "
              f"{best_name}'s {best:.4g}")
    comp_seeds = COMPOSITION_PROTOCOL["seeds"] if args.composition_protocol == "steps" else None
    existing = Path(args.plan) if args.plan else None
    fields = [line.split("\t") for line in (existing.read_text() if existing and existing.is_file() else "").splitlines()
              if line.strip() and not line.startswith("#")]  # the existing plan's jobs
    for family, (m, e, n) in sorted(measured_ratios(fields, args.jobs, as_run, args.seeds, comp_seeds).items()):
        print(f"calibration: {family}, {n} finished jobs with logged wall times: measured {m / 3600:.2f} h, "
              f"estimated {e / 3600:.2f} h, ratio {m / e:.2f}")
    factor = {"forests": args.forest_factor, "networks": args.net_factor}

    def scaled(task, model):  # the composition-only tasks' networks have their own factor where one is given
        if _family(model) == "networks" and task.endswith("(composition only)") and args.composition_net_factor:
            return args.composition_net_factor
        return factor[_family(model)]

    rows, as_run = ([(t, m, s * scaled(t, m)) for t, m, s in r] for r in (rows, as_run))
    print(f"ESTIMATE (not a measurement): {args.seeds} seeds, patience {args.patience}, cap {args.cap}, "
          f"default selection grid; set2set/mean time per epoch, median of recorded pairs: {ratio:.2f}; "
          f"times {args.forest_factor:g} for forests, {args.net_factor:g} for networks")
    if comp_seeds:
        print(f"composition-only tasks: {comp_seeds} seed, patience {COMPOSITION_PROTOCOL['patience_steps']} and cap "
              f"{COMPOSITION_PROTOCOL['max_steps']} optimizer steps, L1 loss with both readouts")
    by_task = {}
    for task, name, seconds in rows:
        by_task.setdefault(task, []).append((name, seconds))
    for task, models in by_task.items():
        total = sum(s for _, s in models)
        detail = ", ".join(f"{n} {s / 3600:.2f}" for n, s in models)
        print(f"{task:<42} {total / 3600:8.2f} h  ({detail})")
    total = sum(s for *_, s in rows)
    print(f"total {total / 3600:.1f} process-hours; on 2 cores (two 1-thread processes) about "
          f"{total / 7200:.1f} h, i.e. at least {int(-(-total // (2 * 3 * 3600)))} three-hour windows")
    if args.plan:
        kept = []  # the fields of the existing plan's lines in parts 1..K
        if args.keep_parts:
            # kept line for line, but estimated again (and so with the factors) from this run's estimate
            # (a job run or started priced as it ran; one of a pair no longer priced keeps its old estimate)
            priced = {False: _by_pair(rows), True: _by_pair(as_run)}
            kept = [f[:8] + [f"{_job_estimate(priced[_started(args.jobs, f[2])], f, args.seeds, comp_seeds) or float(f[8]):.0f}"]
                    + f[9:10] for f in fields if int(f[0]) <= args.keep_parts]
            if args.drop_unstarted:
                kept = [f for f in kept if _started(args.jobs, f[2])]
            have = {(t, c == "1", m) for _, _, _, t, c, m, *_ in kept}
            rows = [(t, m, s) for t, m, s in rows if _key(t, m) not in have]
        jobs = plan(rows, list(range(args.seeds)), args.slot_hours * 3600, first_part=args.keep_parts + 1,
                    composition_seeds=list(range(comp_seeds)) if comp_seeds else None, grids=args.loss_grids)
        header = "# part\tslot\tjob\ttask\tcomposition_only\tmodel\tseeds\tfolds\testimated_s"
        wide = comp_seeds or args.loss_grids  # a flags column: the runner flags a job adds to the protocol
        lines = [header + ("\tflags" if wide else ""),
                 f"# written by: python benchmarks/estimate_protocol_time.py --plan ... --seeds {args.seeds} "
                 f"--patience {args.patience} --cap {args.cap} --slot-hours {args.slot_hours}"
                 + (f" --keep-parts {args.keep_parts}" if args.keep_parts else "")
                 + (" --drop-unstarted" if args.drop_unstarted else "")
                 + (f" --forest-factor {args.forest_factor:g}" if args.forest_factor != 1 else "")
                 + (f" --net-factor {args.net_factor:g}" if args.net_factor != 1 else "")
                 + (f" --ensemble {args.ensemble} --ensemble-max-samples {args.ensemble_max_samples}"
                    if args.ensemble > 1 else "")
                 + (" --composition-protocol steps" if comp_seeds else "")
                 + (f" --prune-margin {args.prune_margin:g}" if args.prune_margin is not None else "")
                 + (f" --prune-losses {args.prune_losses}" if args.prune_losses else "")
                 + (f" --composition-net-factor {args.composition_net_factor:g}" if args.composition_net_factor else "")
                 + " (an ESTIMATE)"]
        lines += ["\t".join(f + ([""] * (10 - len(f)) if wide else [])) for f in kept]
        lines += ["\t".join([str(p), str(sl), j, t, str(int(c)), m, " ".join(map(str, se)), " ".join(map(str, fo)),
                             f"{s:.0f}", *([fl] if wide else [])]) for p, sl, j, t, c, m, se, fo, s, fl in jobs]
        Path(args.plan).write_text("\n".join(lines) + "\n")
        longest = {}
        for p, sl, s in [(int(f[0]), int(f[1]), float(f[8])) for f in kept] + [(j[0], j[1], j[8]) for j in jobs]:
            longest[(p, sl)] = longest.get((p, sl), 0) + s
        parts = max(p for p, _ in longest)
        print(f"plan: {len(kept) + len(jobs)} jobs in {parts} parts -> {args.plan}; estimated longest slot "
              f"{max(longest.values()) / 3600:.2f} h")
        left = {}
        for f in [f[:9] for f in kept] + [[str(p), str(sl), j, t, str(int(c)), m, "", "", str(x)]
                                          for p, sl, j, t, c, m, _, _, x, _ in jobs]:
            if not (Path(args.jobs) / f[2] / "done").is_file():
                left[_family(f[5])] = left.get(_family(f[5]), 0.0) + float(f[8])
        print(f"remaining (jobs without a done file): {sum(left.values()) / 3600:.1f} process-hours: "
              + ", ".join(f"{k} {v / 3600:.1f}" for k, v in sorted(left.items())))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
