"""Tables and plots from the MatBench results files (never pasted by hand).

    python benchmarks/report.py [results folder] [output folder]

Reads every ``matbench_*.json`` under the results folder (default: per task, ``results/matbench_seeds``,
where ``benchmarks/run_matbench.sh`` writes the full protocol's jobs, once all that task's jobs are done, else
``results/matbench``, the single-seed run), merges the parts of each task, and writes
``matbench_table.md``, one bar chart per task against the leaderboard anchors, and a parity
plot (regression) for each task's best model.
"""

from __future__ import annotations

import json
import re
import statistics
import sys
from pathlib import Path

from sklearn_atomsets.matbench.models import THRESHOLD_SUFFIX
from sklearn_atomsets.parents import DEFAULT_PARENT  # models without "[parent]" in their name use it

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "matbench"
SEEDED_RESULTS = HERE / "results" / "matbench_seeds"  # run_matbench.sh's full protocol, in parts (jobs/)
ORDER = ["matbench_steels", "matbench_expt_gap", "matbench_expt_is_metal", "matbench_glass",
         "matbench_jdft2d", "matbench_phonons", "matbench_dielectric", "matbench_log_gvrh", "matbench_log_kvrh",
         "matbench_perovskites", "matbench_mp_gap", "matbench_mp_is_metal", "matbench_mp_e_form"]


SELECTED = "AtomSets (validation-selected)"


def _label(name):
    """The runner's label of a row (``sklearn_atomsets.matbench.parse_model_label``: its model's spec,
    readout, ensemble size, threshold), or None for the rows this report adds (validation-selected)."""
    from sklearn_atomsets.matbench import parse_model_label

    try:
        return parse_model_label(name)
    except ValueError:
        return None


def parent_of(name):
    """The parent a model row's features came from: 'AtomSets-V1 [CHGNet-0.3.0]' -> 'CHGNet-0.3.0'
    (its spec's), and the parent a per-parent validation-selected row chose among."""
    label = _label(name)
    if label is not None:
        return label.spec.parent
    return name[name.index("[") + 1:name.index("]")] if "[" in name and "]" in name else DEFAULT_PARENT


def selected_label(parent=None, threshold=False):
    """The validation-selected row's name: over every candidate, or over one parent's models;
    ``threshold``: over the models whose decision threshold was chosen on inner validation."""
    name = SELECTED if parent is None else f"AtomSets [{parent}] (validation-selected)"
    return name[:-1] + ", validation threshold)" if threshold else name


def _is_selected(name):
    return "(validation-selected" in name


def parents_in(result):
    """The parents of a result's AtomSets-family models, sorted."""
    return sorted({parent_of(n) for n in result["models"] if _is_atomsets(n)})


CLASSIFICATION_NOTE = (
    "Classification tasks are scored as the leaderboard scores them: ROC-AUC as scored by matbench 0.6, "
    "which turns probabilities into labels at 0.5 first (so it equals balanced accuracy); the anchors are "
    "that number. ROC-AUC from the probabilities is given in brackets, for reference only: it is not "
    "comparable with the anchors."
)


def metric_name(result):
    """The metric as the table names it: classification is scored the leaderboard's way."""
    return "MAE" if result["metric"] == "mae" else "ROC-AUC as scored by matbench (labels)"


def rescore_classification(result):
    """Score every classification fold from its stored test predictions, both ways.

    ``score`` becomes ROC-AUC as matbench scores it (labels at 0.5, or at the fold's recorded
    ``threshold`` where one was chosen on inner validation; what the leaderboard anchors
    report) and ``rocauc_proba`` ROC-AUC from the probabilities; the model means follow.
    Files written before the runner recorded both (their ``score`` was from probabilities)
    are corrected this way, from the predictions, never by hand.
    """
    from sklearn_atomsets.matbench import classification_scores

    if result["metric"] == "mae":
        return result
    for m in result["models"].values():
        for f in m["folds"]:
            scores = classification_scores(f["y_true"], f["y_pred"], f.get("threshold"))
            f["score"] = scores.pop("rocauc")
            f.update(scores)
        _summarise(m, _max_epochs(result, m))
    return result


def _max_epochs(result, m):
    return (m.get("settings") or {}).get("max_epochs", result.get("settings", {}).get("max_epochs"))


def _summarise(m, max_epochs=None):
    """Mean over seeds of the fold means, fold and seed spreads, epoch-cap count (summarise_fits)."""
    from sklearn_atomsets.matbench import summarise_fits

    if m["folds"]:
        m.update(summarise_fits(m["folds"], max_epochs))
    if m["folds"] and all("rocauc_proba" in f for f in m["folds"]):
        by_seed = {}
        for f in m["folds"]:
            by_seed.setdefault(f.get("seed"), []).append(f["rocauc_proba"])
        m["rocauc_proba_mean"] = float(sum(sum(v) / len(v) for v in by_seed.values()) / len(by_seed))
    return m


def result_key(result):
    """The file stem of a result: '<task>' or '<task>_composition_only'."""
    return result["task"] + ("_composition_only" if result.get("composition_only") else "")


def task_label(result):
    """The task as the table names it, with what its inputs were."""
    label = result["task"]
    if result.get("composition_only"):
        label += " *(composition only)*"
    if result.get("approximate_structures"):
        label += " *(approx. structures)*"
    return label


PLAN = HERE / "matbench_plan.tsv"  # run_matbench.sh's jobs


def _plan_jobs(plan):
    """``[(job, task, composition_only, model)]`` of run_matbench.sh's plan."""
    out = []
    for line in Path(plan).read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            _, _, job, task, composition_only, model, *_ = line.split("\t")
            out.append((job, task, composition_only == "1", model))
    return out


def _is_addition(model):
    """A plan model that adds rows to a task rather than holding it back: a seed ensemble
    ('<model> xK', grown from the selected nets) or a sets-plus-descriptors model (issue 33's
    hybrids, planned after the tasks' other jobs had run)."""
    label = _label(model)
    return label.ensemble > 1 or label.spec.descriptors


def _plan_model(name):
    """The plan's name of a results row: its label less the threshold suffix, which the runner adds."""
    return name.removesuffix(THRESHOLD_SUFFIX)


def complete_tasks(seeded=SEEDED_RESULTS, plan=PLAN):
    """``(task, composition_only)`` pairs whose every job of ``plan`` has finished (a ``done``
    file in ``<seeded>/jobs/<job>/``), the additions aside (:func:`_is_addition`: seed ensembles,
    sets plus descriptors): they add rows to a task, each once its jobs are done
    (:func:`unfinished_additions`)."""
    jobs = {}
    for job, task, comp, model in _plan_jobs(plan):
        if not _is_addition(model):
            jobs.setdefault((task, comp), []).append(job)
    return {key for key, names in jobs.items() if all((Path(seeded) / "jobs" / j / "done").is_file() for j in names)}


def unfinished_additions(seeded=SEEDED_RESULTS, plan=PLAN):
    """``{(task, composition_only, model)}`` of the plan's additions with a job not done."""
    return {(task, comp, model) for job, task, comp, model in _plan_jobs(plan)
            if _is_addition(model) and not (Path(seeded) / "jobs" / job / "done").is_file()}


def load_default_results(seeded=SEEDED_RESULTS, first=RESULTS, plan=PLAN):
    """Per task, the full protocol's results (``results/matbench_seeds``, written by
    ``run_matbench.sh`` in parts) once every job of the plan for that task has finished, else
    the first, single-seed pass's (``results/matbench``): a table never mixes the two
    protocols within a task, nor shows a task's full protocol with some of its models missing."""
    complete = complete_tasks(seeded, plan)
    full = [r for r in (load_results(seeded, drop=unfinished_additions(seeded, plan)) if Path(seeded).is_dir() else [])
            if (r["task"], bool(r.get("composition_only"))) in complete]
    done = {result_key(r) for r in full}
    return sorted(full + [r for r in load_results(first) if result_key(r) not in done], key=_table_order)


def _table_order(result):
    """Tasks in :data:`ORDER` (others after them, by name), a task's composition-only run last."""
    return ORDER.index(result["task"]) if result["task"] in ORDER else len(ORDER), result["task"], \
        bool(result.get("composition_only"))


def load_results(folder=RESULTS, drop=frozenset()):
    """Every ``matbench_*.json`` under ``folder`` (subfolders included: the jobs of a run in
    parts), merged per task (``merge_results``: fits of each seed and fold of a model run
    with the same settings), rescored and summarised; ``drop``: ``(task, composition_only,
    model)`` rows left out (additions whose jobs are not all done; a row's model is its plan name,
    :func:`_plan_model`)."""
    from sklearn_atomsets.matbench import merge_results

    paths = sorted(Path(folder).rglob("matbench_*.json"), key=lambda p: (p.stat().st_mtime, str(p)))
    files = merge_results([json.loads(p.read_text()) for p in paths])
    results = sorted(files, key=_table_order)
    for r in results:
        # rows by name (files' order is their modification times', which a fresh clone does not keep)
        r["models"] = {n: m for n, m in sorted(r["models"].items())
                       if (r["task"], bool(r.get("composition_only")), _plan_model(n)) not in drop}
        rescore_classification(r)
        for m in r["models"].values():
            _summarise(m, _max_epochs(r, m))
        rows = {SELECTED: validation_selected(r)}
        parents = parents_in(r)
        if len(parents) > 1:  # also per parent, so that each parent's best honest pick is seen
            rows.update({selected_label(p): validation_selected(r, parent=p) for p in parents})
        if any(name.endswith(THRESHOLD_SUFFIX) for name in r["models"]):
            rows[selected_label(threshold=True)] = validation_selected(r, threshold=True)
        for k in ensembles_of_selected(r):
            rows[f"{SELECTED} x{k}"] = validation_selected(r, ensemble=k)
        r["models"].update({k: v for k, v in rows.items() if v})
    return results


def _is_atomsets(name):
    """A row of one of the runner's network models (AtomSets, MLP-f; any parent)."""
    label = _label(name)
    return label is not None and label.spec.is_network


def ensemble_size(model):
    """How many nets a model row averages (``--ensemble K``; rows named '<model> xK'), 1 for a single net."""
    return (model.get("settings") or {}).get("ensemble", 1)


def _of_selected(model):
    """Whether a seed ensemble row grew from its selected net (``--select`` with ``--ensemble K``):
    then each fold's validation score is that first member's, on the split the seed's single nets share."""
    return all(f.get("ensemble", {}).get("of_selected") for f in model["folds"])


def ensembles_of_selected(result):
    """The sizes K of the result's ensemble rows that grew from selected nets (sorted)."""
    return sorted({ensemble_size(m) for n, m in result["models"].items()
                   if _is_atomsets(n) and ensemble_size(m) > 1 and _of_selected(m)})


def _candidates(result, parent, threshold, ensemble):
    """``{model: {(seed, fold): fit}}`` of the rows :func:`validation_selected` may choose among."""
    return {name: {(f.get("seed"), f["fold"]): f for f in m["folds"]} for name, m in result["models"].items()
            if _is_atomsets(name) and ensemble_size(m) == ensemble and (ensemble == 1 or _of_selected(m))
            and (parent is None or parent_of(name) == parent)
            and name.endswith(THRESHOLD_SUFFIX) == threshold
            and all(f.get("validation_score") is not None for f in m["folds"])}


def validation_selected(result, parent=None, threshold=False, ensemble=1):
    """Per seed and fold, the AtomSets-family model with the best inner-validation score, scored on the test fold.

    ``parent``: choose among that parent's models only (see :func:`parent_of`).
    ``threshold``: choose among the classifiers whose decision threshold was chosen on inner
    validation (rows ending in :data:`THRESHOLD_SUFFIX`) instead of those at matbench's 0.5.
    ``ensemble``: choose among the seed ensembles of that size that grew from their selected
    net (``--select --ensemble K``): the choice is made on those first members' scores, so it
    is the choice among the single nets, and the pick's ensemble is what is scored (None
    unless every single-net candidate has such an ensemble).

    The choice uses only each fold's training data (the 90/10 split that drives early
    stopping, the same split for every model of a seed), so unlike picking the best mean
    test score it is an honest model selection. Other seed ensembles are not candidates:
    their validation score is the mean of their members' scores, each on the member's own
    inner split, not a score on the split the single nets share.
    """
    lower = result["metric"] == "mae"
    candidates = _candidates(result, parent, threshold, ensemble)
    if ensemble > 1:  # the single nets' choice: only where every single-net candidate has its ensemble
        singles = _candidates(result, parent, threshold, 1)
        if sorted(f"{n} x{ensemble}" for n in singles) != sorted(candidates):
            return None
    if len(candidates) < 2:
        return None
    units = {f.get("validation_units") for c in candidates.values() for f in c.values()}
    if len(units) > 1:
        raise ValueError(f"{result['task']}: the candidates' inner-validation scores are in different units "
                         f"({sorted(map(str, units))}); convert the older files first with "
                         "benchmarks/convert_validation_units.py.")
    keys = sorted(set.intersection(*(set(c) for c in candidates.values())), key=lambda k: (str(k[0]), k[1]))
    if not keys:  # no seed and fold that every candidate ran
        return None
    chosen = []
    for k in keys:
        name = (min if lower else max)(candidates, key=lambda n: candidates[n][k]["validation_score"])
        chosen.append(dict(candidates[name][k], model=name))
    out = _summarise({"candidates": sorted(candidates), "folds": chosen}, None)
    out["n_fits"] = out["n_hit_cap"] = 0  # its fits are the rows above, counted there
    return out


def best_model(result):
    pick = min if result["metric"] == "mae" else max
    return pick(result["models"], key=lambda name: result["models"][name]["mean"])


def _best(anchors):
    """``(key, value)`` of the leaderboard's best entry among the anchors ('best (TPOT-Mat)'), or None."""
    return next(((key, value) for key, value in anchors.items() if key.startswith("best")), None)


def best_entry(anchors):
    """The leaderboard's best entry for the table: '79.95 (TPOT-Mat)'."""
    best = _best(anchors)
    if best is None:
        return ""
    who = best[0][len("best"):].strip(" ()")
    return f"{best[1]} ({who})" if who else f"{best[1]}"


def training(result, name):
    """How a model was trained, from its recorded settings (older files: the run's settings, MSE)."""
    if _is_selected(name):
        m = result["models"][name]
        seeded = m.get("n_seeds", 1) > 1
        picks = "; ".join(("seed {} ".format(f.get("seed")) if seeded else "") + f"fold {f['fold']}: {f['model']}"
                          for f in m["folds"])
        return (f"per {'seed and ' if seeded else ''}fold, whichever of the {len(m['candidates'])} AtomSets-family "
                f"models above has the best inner-validation score ({picks})")
    spec = _label(name).spec
    if not spec.is_network:
        trees = result["models"][name].get("settings", result["settings"]).get("n_estimators")
        return f"random forest, {trees} trees"
    s = result["models"][name].get("settings") or dict(result["settings"], loss=None)
    loss = s.get("loss") or ("mse" if result["metric"] == "mae" else "cross_entropy")
    loss = {"mse": "MSE", "mae": "L1", "huber": "Huber", "cross_entropy": "cross-entropy"}[loss]
    readout = f"{s['readout']} readout, " if "readout" in s and spec.has_readout else ""
    extra = "".join(f", {k.replace('_', ' ')} {s[k]:g}" for k in ("weight_decay", "dropout") if s.get(k))
    if s.get("standardize_features"):
        extra += ", feature rows standardised on the training fold"
    if s.get("threshold") == "validation":
        extra += ", decision threshold chosen on inner validation (highest balanced accuracy)"
    if ensemble_size(result["models"][name]) > 1 and _of_selected(result["models"][name]):
        extra += (f", then a seed ensemble of {s['ensemble']} nets of the chosen configuration (the chosen net "
                  "and its clones with other seeds; mean prediction; its inner-validation score: the chosen net's)")
    elif ensemble_size(result["models"][name]) > 1:
        extra += (f", seed ensemble of {s['ensemble']} nets (mean prediction; its inner-validation score: "
                  "the members' mean, each on its own split)")
    selection = s.get("selection")
    if selection:
        grid = ", ".join(f"{k} ∈ {{{', '.join(str(v) for v in vs)}}}" for k, vs in selection.items())
        picks = {}
        for f in result["models"][name]["folds"]:
            chosen = f.get("selection", {}).get("chosen", {})
            key = ", ".join(str(chosen[k]) for k in selection if k in chosen)
            picks[key] = picks.get(key, 0) + 1
        made = "; ".join(f"{k} ×{n}" for k, n in sorted(picks.items()))
        fixed = "" if "loss" in selection else f"{loss} loss, "
        fixed += "" if "readout" in selection else readout
        return (f"{fixed}per fit chosen on inner validation among {grid} (chosen: {made}){extra}, "
                f"≤{s['max_epochs']} epochs, patience {s['patience']}")
    return f"{readout}{loss} loss{extra}, ≤{s['max_epochs']} epochs, patience {s['patience']}"


SEEDS_NOTE = (
    "Scores are the mean over seeds of each seed's mean over the 5 folds, ± the standard deviation "
    "over seeds (a seed draws the inner validation split and the initialisation); the spread over "
    "folds is given in brackets. Files from single-seed runs show the fold spread only. "
    "\"at epoch cap\" counts the network fits (selection candidates included) that stopped at the "
    "epoch cap rather than by early stopping. Rows marked *(composition only)* ran on the task's "
    "formulas (structures are not available here) and are not comparable with structure-based entries."
)


def row_name(result, name):
    """A model's name in the tables: with more than one parent in a task, every AtomSets-family
    row names its parent ('AtomSets-V1' -> 'AtomSets-V1 [Eform_MP_2019]')."""
    if _is_atomsets(name) and "[" not in name and len(parents_in(result)) > 1:
        return f"{name} [{DEFAULT_PARENT}]"
    return name


def parent_comparison(results):
    """The same models on each parent, side by side: ``(parents, rows)`` for the tasks that
    ran more than one parent, each row ``[task, model, score per parent..., anchors]``
    (scores as ``score_cell``'s mean, '' where that parent did not run the model)."""
    tasks = [r for r in results if len(parents_in(r)) > 1]
    parents = sorted({p for r in tasks for p in parents_in(r)}, key=lambda p: (p != DEFAULT_PARENT, p))
    rows = []
    for r in tasks:
        by_model = {}
        for name, m in r["models"].items():
            if name in (SELECTED, selected_label(threshold=True)) or name.startswith(f"{SELECTED} x"):
                continue
            if _is_selected(name):
                base, parent = "AtomSets (validation-selected among the parent's models)", parent_of(name)
            elif _is_atomsets(name):
                base, parent = re.sub(r"\s*\[[^]]*\]", "", name), parent_of(name)
            else:
                continue
            by_model.setdefault(base, {})[parent] = m["mean"]
        anchors = "; ".join(f"{k} {v}" for k, v in r["anchors"].items() if k in ("AMMExpress v2020", "MEGNet (kgcnn)"))
        for base, scores in by_model.items():
            rows.append([f"{r['task']} ({metric_name(r)})", base] + [f"{scores[p]:.4g}" if p in scores else ""
                                                                    for p in parents] + [anchors])
    return parents, rows


def markdown_table(results):
    lines = [
        CLASSIFICATION_NOTE,
        "",
        SEEDS_NOTE,
        "",
        "| task | metric | model | training | mean ± std over seeds (folds) | at epoch cap | AMMExpress v2020 | "
        "RF-SCM/Magpie | MEGNet (kgcnn) | best entry |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        anchors = r["anchors"]
        ours_best = best_model(r)
        for name, m in r["models"].items():
            flag = " **(best here)**" if name == ours_best else ""
            lines.append(
                f"| {task_label(r)} | {metric_name(r)} | {row_name(r, name)}{flag} | {training(r, name)} | "
                f"{score_cell(m)} | {cap_cell(m)} | {anchors.get('AMMExpress v2020', '')} | "
                f"{anchors.get('RF-SCM/Magpie', '')} | {anchors.get('MEGNet (kgcnn)', '-')} | {best_entry(anchors)} |"
            )
    notes = sorted({n for r in results for n in r.get("notes", [])})
    if notes:
        lines += ["", "Notes from the runs:", ""] + [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n"


#: The rule that picks each task's recommended model, fixed before looking at test scores (issue 35):
#: the validation-selected AtomSets row over every parent -- per seed and fold, the AtomSets-family
#: model with the best inner-validation score -- as its largest seed ensemble where every candidate
#: has one; for classifiers the selection over the nets whose decision threshold was chosen on inner
#: validation (the protocol's threshold); without a selection (a single AtomSets-family model), that
#: model. Random forests (AMM-style) are the baseline, never recommended.
RECOMMENDATION_RULE = (
    "Recommended model, by a rule fixed in advance: the validation-selected AtomSets row (per seed and fold, "
    "the AtomSets-family model with the best inner-validation score; every parent's models, with or without "
    "descriptors, are candidates), as its largest seed ensemble where every candidate has one; for "
    "classifiers the selection among nets whose decision threshold was chosen on inner validation. Never "
    "picked on test scores."
)
HEADLINE_ANCHORS = ("AMMExpress v2020", "RF-SCM/Magpie", "MODNet v0.1.12", "MEGNet (kgcnn)")


def recommended(result):
    """The name of the task's recommended model row by :data:`RECOMMENDATION_RULE`, or None."""
    models = result["models"]
    threshold = result["metric"] != "mae" and selected_label(threshold=True) in models
    base = selected_label(threshold=threshold)
    for k in reversed(ensembles_of_selected(result)):  # the largest seed ensemble of the selection
        if models.get(f"{base} x{k}"):
            return f"{base} x{k}"
    if models.get(base):
        return base
    atomsets = [n for n in models if _is_atomsets(n) and n.endswith(THRESHOLD_SUFFIX) == threshold]
    return atomsets[0] if len(atomsets) == 1 else None


def _protocol(m, result):
    seeds = m.get("n_seeds") or 1
    where = ", compositions only (the anchors used structures)" if result.get("composition_only") else ""
    settings = {**(result.get("settings") or {}), **(m.get("settings") or {})}
    if settings.get("patience_steps"):  # the composition-only tasks' protocol (docs/benchmarks.rst)
        return (f"composition protocol: {seeds} seed{'s' if seeds > 1 else ''}, patience "
                f"{settings['patience_steps']} / cap {settings.get('max_steps')} optimizer steps, "
                f"selection on inner validation{where}")
    if seeds >= 3:
        return f"full: {seeds} seeds, selection on inner validation{where}"
    return f"first pass: 1 seed{where}"


def _anchors(result):
    from sklearn_atomsets.matbench import ANCHORS

    return {**result.get("anchors", {}), **ANCHORS.get(result["task"], {})}


HEADLINE_COLUMNS = ("task", "metric", "recommended model", "score ± seed std", *HEADLINE_ANCHORS, "best entry",
                    "vs AMMExpress v2020", "vs best entry", "protocol")


def headline_rows(results):
    """The headline's rows (cells in :data:`HEADLINE_COLUMNS` order): one per task of :data:`ORDER`
    and per result (a task's composition-only run is its own row), tasks not run yet included."""
    from sklearn_atomsets.matbench import ANCHORS

    rows = []
    for r in results:
        name, anchors = recommended(r), _anchors(r)
        cells = [task_label(r), metric_name(r)]
        if name is None:
            rows.append(cells + ["(no AtomSets model run)"] + [""] * (len(HEADLINE_COLUMNS) - 3))
            continue
        m = r["models"][name]
        lower = r["metric"] == "mae"
        std = m.get("seed_std")
        best = (_best(anchors) or (None, None))[1]
        cells += [row_name(r, name), f"{m['mean']:.4g} ± {std:.2g}" if std is not None else f"{m['mean']:.4g} (1 seed)"]
        cells += [str(anchors.get(a, "-")) for a in HEADLINE_ANCHORS] + [best_entry(anchors) or "-"]
        cells += [verdict(m["mean"], anchors["AMMExpress v2020"], lower, std) if "AMMExpress v2020" in anchors else "-",
                  verdict(m["mean"], best, lower, std) if best is not None else "-", _protocol(m, r)]
        rows.append(cells)
    for task in [t for t in ORDER if t not in {r["task"] for r in results}]:  # every task has its row
        anchors = ANCHORS.get(task, {})
        rows.append([task, "", "not run yet", ""] + [str(anchors.get(a, "-")) for a in HEADLINE_ANCHORS]
                    + [best_entry(anchors) or "-", "", "", ""])
    return rows


def headline(results):
    """The headline as markdown: the rule, then one row per task (:func:`headline_rows`)."""
    lines = [RECOMMENDATION_RULE, "", "| " + " | ".join(HEADLINE_COLUMNS) + " |", "|---" * len(HEADLINE_COLUMNS) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in headline_rows(results)]
    return "\n".join(lines) + "\n"


def headline_figure(results, path):
    """One bar per task: the recommended model's error relative to AMMExpress v2020 (MAE ratio;
    for ROC-AUC the ratio of 1 - ROC-AUC), with MODNet and the best entry marked; < 1 is better."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def error(value, lower):
        return value if lower else 1.0 - value

    rows = []
    for r in results:
        name, anchors = recommended(r), _anchors(r)
        if name is None or "AMMExpress v2020" not in anchors:
            continue
        lower = r["metric"] == "mae"
        m = r["models"][name]
        amm = error(anchors["AMMExpress v2020"], lower)
        std = m.get("seed_std") or 0.0
        best = (_best(anchors) or (None, None))[1]
        rows.append((task_label(r).replace("matbench_", "").replace("*", ""), error(m["mean"], lower) / amm, std / amm,
                     error(anchors["MODNet v0.1.12"], lower) / amm if "MODNet v0.1.12" in anchors else None,
                     error(best, lower) / amm if best is not None else None))
    if not rows:
        return False
    fig, ax = plt.subplots(figsize=(7.5, 0.42 * len(rows) + 1.4))
    y = range(len(rows))
    ax.barh(y, [r[1] for r in rows], xerr=[r[2] for r in rows], color="#4472c4", label="recommended AtomSets model")
    ax.scatter([r[3] for r in rows if r[3] is not None], [k for k, r in zip(y, rows) if r[3] is not None],
               marker="D", color="#ed7d31", zorder=3, label="MODNet v0.1.12")
    ax.scatter([r[4] for r in rows if r[4] is not None], [k for k, r in zip(y, rows) if r[4] is not None],
               marker="|", s=200, color="black", zorder=3, label="best entry")
    ax.axvline(1.0, color="grey", lw=1)
    ax.set_yticks(list(y), [r[0] for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("error relative to AMMExpress v2020 (< 1: better)\nMAE ratio; classification: ratio of 1 - ROC-AUC",
                  fontsize=9)
    ax.set_title("Recommended AtomSets model per task (bar: mean ± seed std)", fontsize=9)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return True


def score_cell(m):
    """'0.4093 ± 0.004 over 3 seeds (folds ± 0.02)'; one seed: '0.4093 ± 0.02 over folds (1 seed)';
    ROC-AUC from probabilities in brackets for classification."""
    if m.get("seed_std") is not None:
        cell = f"{m['mean']:.4g} ± {m['seed_std']:.2g} over {m['n_seeds']} seeds (folds ± {m['std']:.2g})"
    else:
        cell = f"{m['mean']:.4g} ± {m['std']:.2g} over folds (1 seed)"
    if "rocauc_proba_mean" in m:
        cell += f" [from probabilities: {m['rocauc_proba_mean']:.4g}]"
    return cell


def cap_cell(m):
    """'3/45': network fits that stopped at the epoch cap, of those recorded ('-': none, e.g. forests)."""
    return f"{m['n_hit_cap']}/{m['n_fits']}" if m.get("n_fits") else "-"


def verdict(score, value, lower, seed_std):
    """'beats by 0.012, seed std 0.004 (margin beyond the seed spread)' or 'does NOT beat (short by ...)'."""
    margin = value - score if lower else score - value
    spread = "seed std n/a (1 seed)" if seed_std is None else f"seed std {seed_std:.2g}"
    if margin > 0:
        where = "" if seed_std is None else (
            " (margin beyond the seed spread)" if margin > seed_std else " (margin within the seed spread)")
        return f"beats by {margin:.3g}, {spread}{where}"
    return f"does NOT beat (short by {-margin:.3g}, {spread})"


def target_check(results):
    """The issue's targets, stated from the numbers: best AtomSets model vs the anchors, with margins."""
    lines = []
    for r in results:
        lower = r["metric"] == "mae"
        atomsets = {k: v for k, v in r["models"].items() if _is_atomsets(k)}
        if not atomsets:
            continue
        tag = " (composition only)" if r.get("composition_only") else ""
        best = (min if lower else max)(atomsets, key=lambda k: atomsets[k]["mean"])
        contenders = [(f"best AtomSets model (picked on test scores) {best}", atomsets[best])]
        contenders += [(k, m) for k, m in r["models"].items() if _is_selected(k)]
        for label, m in contenders:
            for anchor in ("RF-SCM/Magpie", "AMMExpress v2020", "MEGNet (kgcnn)"):
                if anchor not in r["anchors"]:
                    continue
                value = r["anchors"][anchor]
                lines.append(f"- {r['task']}{tag} ({metric_name(r)}): {label} {m['mean']:.4g} vs {anchor} {value}: "
                             f"{verdict(m['mean'], value, lower, m.get('seed_std'))}")
        v1 = {k: v for k, v in r["models"].items() if k.startswith("AtomSets-V1")}
        if "MEGNet (kgcnn)" in r["anchors"] and v1:
            name = min(v1, key=lambda k: v1[k]["mean"])
            value = r["anchors"]["MEGNet (kgcnn)"]
            lines.append(f"- {r['task']}{tag}: {name} {v1[name]['mean']:.4g} vs MEGNet (kgcnn) {value}: "
                         f"{verdict(v1[name]['mean'], value, True, v1[name].get('seed_std'))}")
    return "\n".join(lines) + "\n"


def paired_by_seed(pairs, lower=True):
    """``pairs``: ``(seed, score, reference score)`` per fit. Per seed (in first-seen order) the mean
    over its fits of score - reference, and in how many fits the score is better than the reference
    (lower, or higher with ``lower=False``; a tie counts for neither)."""
    diffs = {}
    for seed, score, reference in pairs:
        diffs.setdefault(seed, []).append(score - reference)
    better = sum((d < 0) == lower and d != 0 for v in diffs.values() for d in v)
    return [statistics.fmean(v) for v in diffs.values()], better


def ensemble_gains(results):
    """Each seed-ensemble row against its own first member (the chosen net alone, scored on the same
    test folds: recorded as ``ensemble.first_member_score``), paired: per seed the mean over folds of
    (ensemble - first member), then mean ± std over seeds, and in how many fits the ensemble was better."""
    lines = []
    for r in results:
        lower = r["metric"] == "mae"
        for name, m in r["models"].items():
            firsts = [f.get("ensemble", {}).get("first_member_score") for f in m["folds"]]
            if not firsts or any(x is None for x in firsts):
                continue
            means, better = paired_by_seed(((f.get("seed"), f["score"], first) for f, first in zip(m["folds"], firsts)),
                                           lower)
            spread = f" ± {statistics.stdev(means):.2g}" if len(means) > 1 else ""
            lines.append(f"- {task_label(r)} ({metric_name(r)}, {'lower' if lower else 'higher'} is better): "
                         f"{row_name(r, name)} minus its first member: {statistics.fmean(means):+.3g}{spread} over "
                         f"{len(means)} seed(s) (per seed {', '.join(f'{x:+.3g}' for x in means)}); "
                         f"ensemble better in {better} of {len(firsts)} fits")
    return "\n".join(lines) + "\n" if lines else ""


def bar_chart(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(result["models"]) + [f"[{k}]" for k in result["anchors"]]
    means = [m["mean"] for m in result["models"].values()] + list(result["anchors"].values())
    stds = [m["seed_std"] if m.get("seed_std") is not None else m["std"] for m in result["models"].values()]
    stds += [0.0] * len(result["anchors"])
    colors = ["#4472c4"] * len(result["models"]) + ["#a5a5a5"] * len(result["anchors"])
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(names) + 1.2))
    ax.barh(range(len(names)), means, xerr=stds, color=colors)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel(metric_name(result) + (f" ({result['unit']})" if result["unit"] else ""))
    spread = "std over seeds" if any(m.get("seed_std") is not None for m in result["models"].values()) else \
        "std of 5 folds"
    where = ", composition only" if result.get("composition_only") else ""
    ax.set_title(f"{result['task']}{where}: ours (blue, mean ± {spread}) vs leaderboard (grey)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parity_plot(result, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    name = best_model(result)
    folds = result["models"][name]["folds"]
    folds = [f for f in folds if f.get("seed") == folds[0].get("seed")]  # one seed: each test row once
    y_true = [v for f in folds for v in f["y_true"]]
    y_pred = [v for f in folds for v in f["y_pred"]]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter(y_true, y_pred, s=4, alpha=0.5)
    lo, hi = min(y_true + y_pred), max(y_true + y_pred)
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xlabel("MatBench target (test folds)")
    ax.set_ylabel(f"{name} prediction")
    seed = "" if folds[0].get("seed") is None else f" (seed {folds[0]['seed']})"
    ax.set_title(f"{result['task']}: {name}{seed}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[1]) if len(argv) > 1 else HERE / "results"
    if argv:
        folder = Path(argv[0])
        # run_matbench.sh passes <results>/matbench_seeds: its tasks, the others from <results>/matbench
        results = (load_default_results(folder, folder.parent / "matbench", PLAN) if folder.name == SEEDED_RESULTS.name
                   else load_results(folder))
    else:
        folder, results = f"{SEEDED_RESULTS} or {RESULTS}", load_default_results()
    if not results:
        print(f"no results in {folder}")
        return 1
    plots = out / "plots"
    plots.mkdir(parents=True, exist_ok=True)
    parents, rows = parent_comparison(results)
    by_parent = ""
    if rows:
        by_parent = ("\n## The same models on each parent\n\n" + f"| task | model | {' | '.join(parents)} | anchors |\n"
                     + "|---" * (len(parents) + 3) + "|\n" + "".join(f"| {' | '.join(row)} |\n" for row in rows))
    gains = ensemble_gains(results)
    figure = headline_figure(results, plots / "headline_vs_ammexpress.png")
    (out / "matbench_table.md").write_text(
        "# MatBench v0.1, official folds\n\n## Headline: one recommended model per task\n\n" + headline(results)
        + ("\n![error relative to AMMExpress](plots/headline_vs_ammexpress.png)\n" if figure else "")
        + "\n## Every model\n\n" + markdown_table(results) + by_parent + "\n## Targets\n\n"
        + target_check(results) + (gains and "\n## Seed ensembles against their first member (paired, same folds)\n\n"
                                   + gains)
    )
    for r in results:
        bar_chart(r, plots / f"{result_key(r)}_bars.png")
        if r["metric"] == "mae":
            parity_plot(r, plots / f"{result_key(r)}_parity.png")
    print(f"wrote {out / 'matbench_table.md'} and {len(list(plots.glob('*.png')))} plots")
    return 0


if __name__ == "__main__":
    sys.exit(main())
