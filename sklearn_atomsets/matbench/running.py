"""Running a task: every model of a run on the task's official folds, seed by seed and fold by fold.

Every model is a scikit-learn ``Pipeline(featurizer -> estimator)``. For each seed and fold
the featurizer runs on the training and test inputs (timed; the process-wide feature cache
means later models, seeds and folds reuse the frozen-encoder outputs; a forest baseline's
matminer featurizers run once per task on its distinct inputs, :func:`_featurize_once`), the estimator is
fitted on the training part (its own 90/10 split, drawn from the seed, drives early
stopping) and scored on the test part. With a selection grid (:func:`select_protocol`)
every candidate training configuration is fitted on the training part and the one with the
best inner-validation score is the one scored on the test part. Results go to
``<out>/<task>.json`` (``<task>_composition_only.json`` for the composition-only copies)
with per-fit scores, times, epochs, selection candidates and test predictions.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import re
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from sklearn.base import clone

from .._baseline import MatminerFeatures
from .._featurizers import precompute_features
from .models import MODELS, _seed_ensemble, _tunes_threshold, make_model, model_label, models_for
from .protocol import TrainingSettings, step_epochs
from .results import (COMPOSITION_ONLY_NOTE, LEAKAGE_NOTE, VALIDATION_UNITS, _annotate_fits, _model_settings,
                      _score, _settings_record, _write_atomically, summarise_fits)
from .selection import _fit_config, _fit_record, candidate_configs, recorded_selections, select_protocol, tune_threshold
from .tasks import ANCHORS, load_matbench_composition_task, load_matbench_task

__all__ = ["run_matbench_task"]


def _recorded_settings(name, info, settings, selection):
    """A model's settings as the results record them, with its selection grid if any."""
    out = _model_settings(name, info, settings)
    candidates = candidate_configs(name, info, selection) if selection else []
    if candidates:
        out["selection"] = {k: sorted({c[k] for c in candidates}, key=str) for k in candidates[0]}
    return out


def run_matbench_task(task_name, models=None, folds=range(5), settings=None, out_dir=None, seed=0, log=print,
                      seeds=None, selection=None, composition_only=False, selected_from=None, resume=False,
                      feature_cache=None):
    """Run models on one MatBench task's official folds and return (and save) the results.

    Parameters
    ----------
    task_name : str
        e.g. ``"matbench_steels"``.
    models : list of str, optional
        Names of :data:`MODELS` (default: all that apply to the task's inputs).
    folds : iterable of int, default=range(5)
    settings : TrainingSettings, optional
    out_dir : path-like, optional
        Where ``<task>.json`` goes, merged with what an earlier run recorded there: other
        models are kept; a model run again with other settings is replaced; a model run
        again with the same settings (and selection grid) keeps its earlier fits of other
        seeds and folds, so one table can be run in parts (e.g. ``--folds 0 1`` then
        ``--folds 2 3 4``).
    seed : int, default=0
        The seed of a single-seed run (``seeds`` overrides it).
    seeds : iterable of int, optional
        One full run per seed; the seed draws the inner validation split and the
        initialisation (the random forest's seed for the baselines).
    selection : dict, optional
        A selection grid (:func:`parse_selection`): each network fit becomes
        :func:`select_protocol` over its candidates, on inner-validation scores only;
        every candidate is recorded with its validation score.
    composition_only : bool, default=False
        Run on the task's composition-only copy (``load_matbench_composition_task``) with
        the composition models; results go to ``<task>_composition_only.json``.
    selected_from : list of path-like, optional
        With ``selection`` and ``settings.ensemble`` > 1: result files or folders of single-net
        runs of the same settings and grid. Where they record a fit's selection (same model,
        seed and fold; :func:`recorded_selections`) it is reused: only the chosen configuration
        is fitted again, as the first member (1 + K - 1 fits instead of every candidate + K - 1).
        Fits they do not record are selected as usual.
    resume : bool, default=False
        Resume an interrupted run: fits that ``out_dir``'s file already records for the same
        model, settings and selection grid (same seed and fold) are kept and not fitted again.
        The file is written after every fit (with or without ``resume``), so a run that is
        stopped loses at most the fit it was in. Without ``resume`` such fits are fitted again
        and replace the recorded ones.
    feature_cache : path-like, optional
        A folder kept between runs: the forest baselines' features of the whole task
        (:func:`_featurize_once`) and, under ``parents/<versions>/``, the parents' outputs per
        structure (:func:`precompute_features` with ``cache``), read by later runs on the same
        inputs instead of computed again.
    """
    settings = settings or TrainingSettings()
    if settings.threshold not in ("0.5", "validation"):
        raise ValueError(f"threshold should be '0.5' or 'validation', got {settings.threshold!r}.")
    seeds = [seed] if seeds is None else [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds should be distinct integers, got {seeds}.")
    task = load_matbench_composition_task(task_name) if composition_only else load_matbench_task(task_name)
    info = task.info
    settings = step_epochs(settings, len(task.inputs))
    if settings.threshold == "validation" and settings.ensemble > 1 and info.kind == "classification":
        raise ValueError("A threshold chosen on inner validation needs single nets: a seed ensemble's members "
                         "each hold out their own split, so none is held out from the ensemble.")
    if selected_from and not (selection and settings.ensemble > 1):
        raise ValueError("selected_from reuses single-net selections for seed ensembles grown from the selected "
                         "net: it needs a selection grid and ensemble > 1.")
    names = models_for(info, models)
    file = f"{task_name}_composition_only.json" if composition_only else f"{task_name}.json"
    result = {
        "task": task_name,
        "metric": info.metric,
        "unit": info.unit,
        "n_samples": len(task.inputs),
        "data_source": task.source,
        "approximate_structures": task.approximate,
        "composition_only": bool(composition_only),
        "settings": _settings_record(settings),
        "seed": seeds[0],
        "seeds": seeds,
        "selection": {k: list(v) for k, v in selection.items()} if selection else None,
        # what the fits' inner-validation scores are (files before 2026-11-26 14:17: standardised targets)
        "validation_units": VALIDATION_UNITS[info.kind],
        "anchors": ANCHORS.get(task_name, {}),
        "notes": [LEAKAGE_NOTE] if task_name.startswith("matbench_mp_") else [],
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "models": {},
    }
    if composition_only:
        result["notes"].insert(0, COMPOSITION_ONLY_NOTE)
    earlier_fits = {}
    if out_dir is not None and (Path(out_dir) / file).is_file():
        # keep the models an earlier run recorded (each with its own settings); rerun ones are replaced,
        # unless their settings are the same: then their fits of other seeds and folds are kept
        earlier = json.loads((Path(out_dir) / file).read_text())
        if earlier.get("validation_units") != result["validation_units"]:
            _annotate_fits(earlier)  # an older file: its fits carry their seed and units into this one
        if earlier.get("task") == task_name:
            labels = {model_label(name, settings, selection, info.kind): name for name in names}
            for label, m in earlier.get("models", {}).items():
                if label not in labels:
                    result["models"][label] = m
                elif m.get("settings") == _recorded_settings(labels[label], info, settings, selection):
                    earlier_fits[label] = m["folds"]
            result["seeds"] = sorted(set(seeds) | set(earlier.get("seeds", [earlier.get("seed", 0)])))
    if task.approximate:
        result["notes"].append(
            "Structures rebuilt from 6-decimal text (../shared/data/matbench/approx); targets are exact."
        )
    start = time.perf_counter()
    run_inputs = []
    for fold in folds:
        X_train, _, X_test, _ = task.split(fold)
        run_inputs += [*X_train, *X_test]
    # with a feature cache, the parents' outputs are kept in its parents/ folder, one file per structure and
    # parent (keyed by the weights' checksum), under the versions that computed them: the other jobs and seeds on
    # the same task and parent read them instead of encoding again
    parents = None if feature_cache is None else Path(feature_cache) / "parents" / _versions_folder()
    if precompute_features(run_inputs, [make_model(name, info, settings)[0] for name in names], cache=parents):
        result["encode_s"] = time.perf_counter() - start
        log(f"{task_name}: every structure encoded once per parent for all models ({result['encode_s']:.1f} s)")
    # the forests' features of every row, each distinct input featurized once for every fold and seed (when a
    # forest first has a fit to run: a resumed run whose fits are all recorded featurizes nothing)
    tables, memo = {}, {}
    for name in names:
        label = model_label(name, settings, selection, info.kind)
        candidates = candidate_configs(name, info, selection) if selection else []
        recorded = {}
        if selected_from and candidates:
            single = replace(settings, ensemble=1)
            recorded = recorded_selections(selected_from, file, model_label(name, single, selection, info.kind),
                                           _recorded_settings(name, info, single, selection))
            log(f"{task_name} {label}: {sum((s, f) in recorded for s in seeds for f in folds)} of "
                f"{len(seeds) * len(folds)} fits reuse a recorded single-net selection")
        fits = []
        kept = {(f.get("seed"), f["fold"]): f for f in earlier_fits.get(label, [])} if resume else {}

        def record():
            done = {(f["seed"], f["fold"]) for f in fits}
            every = fits + [f for f in earlier_fits.get(label, []) if (f.get("seed"), f["fold"]) not in done]
            every.sort(key=lambda f: (f.get("seed") is None, f.get("seed") or 0, f["fold"]))
            result["models"][label] = {**summarise_fits(every, settings.max_epochs),
                                       "settings": _recorded_settings(name, info, settings, selection), "folds": every}
            if out_dir is not None:  # after every fit: a stopped run loses at most the fit it was in
                _write_atomically(Path(out_dir) / file, (json.dumps(result, indent=1) + "\n").encode())

        for fold in folds:
            shared = {}  # the featurizer step does not depend on the seed: computed once per fold
            if not MODELS[name].is_network and any((s, fold) not in kept for s in seeds):
                if name not in tables:  # or, for a forest, once for the task: the fold's rows of it
                    start = time.perf_counter()
                    tables[name] = _featurize_once(task, name, settings, list(folds), feature_cache, log, memo)
                    result.setdefault("featurize_once_s", {})[name] = time.perf_counter() - start
                table, rows = tables[name]
                shared = {"train": table[rows[task.folds[fold][0]]], "test": table[rows[task.folds[fold][1]]]}
            for s in seeds:
                if (s, fold) in kept:
                    fits.append(kept[(s, fold)])
                    log(f"{task_name} {label} seed {s} fold {fold}: recorded, kept (resume)")
                    continue
                # the selection's candidates, pickled as each is done, until the fit is recorded
                checkpoint = None if out_dir is None else (
                    Path(out_dir) / "checkpoints" / Path(file).stem / re.sub(r"[^\w.-]+", "_", label) / f"seed{s}_fold{fold}")
                fits.append(_run_fold(task, name, fold, s, settings, selection if candidates else None, shared,
                                      recorded.get((s, fold)), checkpoint=checkpoint, resume=resume))
                f = fits[-1]
                chosen = f" chosen {f['selection']['chosen']}" if "selection" in f else ""
                log(f"{task_name} {label} seed {s} fold {fold}: {info.metric} {f['score']:.4f}{chosen} "
                    f"(featurize {f['featurize_s']:.1f} s, fit {f['fit_s']:.1f} s)")
                record()
                if checkpoint is not None:
                    shutil.rmtree(checkpoint, ignore_errors=True)
                    try:  # and the folders above it that this leaves empty, up to the results folder
                        os.removedirs(checkpoint.parent)
                    except OSError:
                        pass
        record()
    return result


def _input_digest(inputs):
    """A digest of a task's inputs, exact to the last bit: formula strings as text, structures as their
    lattice, fractional coordinates and species (hashing their text would round the coordinates)."""
    digest = hashlib.sha256()
    for x in inputs:
        if isinstance(x, str):
            digest.update(x.encode() + b"\0")
        elif hasattr(x, "frac_coords"):
            digest.update(np.asarray(x.lattice.matrix, dtype=np.float64).tobytes())
            digest.update(np.asarray(x.frac_coords, dtype=np.float64).tobytes())
            digest.update(" ".join(str(sp) for sp in x.species_and_occu).encode() + b"\0")
        else:
            digest.update(repr(x).encode() + b"\0")
    return digest.hexdigest()


def _versions_folder():
    """The parents' cache subfolder of these versions (this package's and torch's): outputs a later
    version computes (another encoder, other kernels) are not mixed with an earlier one's."""
    import torch

    from .. import __version__

    return f"sklearn_atomsets-{__version__}_torch-{torch.__version__}"


def _featurize_once(task, name, settings, folds, cache=None, log=print, memo=None):
    """A forest baseline's featurizer output for every row of the task the folds use: ``(table, rows)``,
    the row of ``table`` of task position ``i`` being ``rows[i]``.

    The runner used to featurize each fold's training and test rows, i.e. the whole task once per
    fold (and per process, where the plan runs a task's folds as separate jobs). The featurizers
    of the baselines (matminer's composition and structure sets, the parent's fixed-length
    statistics) compute each row from that row alone, so the same table comes from featurizing
    every *distinct* input once (formula strings repeat: 5-49% of the composition-only tasks'
    rows are polymorphs' formulas) and taking each fold's rows of it; a test checks the fold
    results equal the per-fold featurization's. The step is fitted on the first fold's training
    rows, as before (its fit reads no targets and no test rows).

    The table is made of one block per featurizer of the step (``MatminerFeatures`` hstacks them
    in the same order). With ``cache`` (a folder), each block is kept as
    ``<featurizer>__<digest>.npz``, the digest of the inputs, the featurizer's parameters and the
    library versions (stored in the file too); a later run with the same digest (another fold's
    job, the other forest on the same matminer sets, another task on the same inputs) reads it
    instead of featurizing. ``memo`` (a dict) shares the blocks between the models of one run.
    """
    import matminer

    from .. import __version__

    step = make_model(name, task.info, settings)[0]
    if not isinstance(step, MatminerFeatures):
        raise TypeError(f"{name}: a forest baseline's first step is MatminerFeatures, got {type(step).__name__}.")
    memo = {} if memo is None else memo
    # the rows the run's folds use (all of them unless a caller sliced the folds), each distinct input once
    used = np.unique(np.concatenate([np.concatenate(task.folds[f]) for f in folds]).astype(np.int64))
    inputs = task.inputs.iloc[used].tolist()
    if all(isinstance(x, str) for x in inputs):
        codes, uniques = pd.factorize(pd.Series(inputs, dtype=object))
        uniques = list(uniques)
    else:  # structures are not compared: each is its own row
        codes, uniques = np.arange(len(inputs)), inputs
    rows = np.full(len(task.inputs), -1, dtype=np.int64)  # task position -> row of the table (-1: not used)
    rows[used] = codes
    # one block per featurizer, each kept by what it depends on (the featurizer with every parameter, untruncated,
    # less the memory addresses of its data sources; the inputs; the versions), not by the task or the model:
    # the two forests share matminer's blocks, and tasks on the same inputs (the composition-only copies of
    # mp_gap and mp_is_metal, of log_gvrh and log_kvrh) share every block
    digest = _input_digest(uniques)
    X_fit, y_fit, _, _ = task.split(folds[0])
    blocks = []
    for featurizer in step._featurizers():
        one = clone(step).set_params(featurizers=[featurizer])
        key = hashlib.sha256(json.dumps({
            "featurizer": re.sub(r" at 0x[0-9a-fA-F]+", "", one.__repr__(N_CHAR_MAX=10**7)), "inputs": digest,
            "versions": [__version__, matminer.__version__, np.__version__]}, sort_keys=True).encode()).hexdigest()
        what = f"{task.name} {name}: {type(featurizer).__name__} of {len(uniques)} distinct inputs"
        path = None if cache is None else Path(cache) / f"{type(featurizer).__name__}__{key[:20]}.npz"
        if key in memo:
            blocks.append(memo[key])
            log(f"{what} computed for an earlier model")
            continue
        if path is not None and path.is_file():
            with np.load(path, allow_pickle=False) as saved:
                if str(saved["key"]) == key:
                    blocks.append(memo.setdefault(key, saved["features"]))
                    log(f"{what} read from {path}")
                    continue
        start = time.perf_counter()
        block = np.asarray(one.fit(list(X_fit), y_fit.to_numpy()).transform(uniques), dtype=np.float64)
        blocks.append(memo.setdefault(key, block))
        log(f"{what} ({len(used)} rows) featurized once for every fold ({time.perf_counter() - start:.1f} s)")
        if path is not None:
            buffer = io.BytesIO()
            np.savez(buffer, features=block, key=np.array(key))
            _write_atomically(path, buffer.getvalue())
    return np.hstack(blocks), rows


def _run_fold(task, name, fold, seed, settings, selection, shared=None, recorded=None, checkpoint=None, resume=False):
    """One fit (or one selection over candidates) on a fold's training part, scored on its test part.

    ``recorded`` (a seed ensemble grown from the selected net only): the selection a single-net
    run recorded for this seed and fold (:func:`recorded_selections`); its chosen configuration
    is fitted again as the first member instead of fitting every candidate again.

    ``shared`` (a dict, one per fold) keeps the output of the pipeline's first step, the
    featurizer, which has no seed, for the fold's other seeds; the later steps (the
    baseline's filters and tree-based selection) are fitted per seed. ``featurize_s`` is the
    time this fit spent featurizing (near 0 where the features were reused).
    """
    info = task.info
    X_train, y_train, X_test, y_test = task.split(fold)
    pipe = make_model(name, info, settings, seed)
    model = pipe[-1]
    start = time.perf_counter()
    reused = shared is not None and "train" in shared
    if reused:
        F_train, F_test = shared["train"], shared["test"]
    else:
        F_train = pipe[0].fit_transform(list(X_train), y_train.to_numpy())
        F_test = pipe[0].transform(list(X_test))
        if shared is not None:
            shared.update(train=F_train, test=F_test)
    if len(pipe) > 2:
        rest = pipe[1:-1]
        F_train = rest.fit_transform(F_train, y_train.to_numpy())
        F_test = rest.transform(F_test)
    t_featurize = time.perf_counter() - start
    start = time.perf_counter()
    grow = bool(selection) and settings.ensemble > 1  # select on single nets, then the ensemble of the pick
    if grow and recorded is not None:
        # the selection a single-net run of these settings recorded for this seed and fold: only its
        # chosen configuration is fitted again (same seed, same inner split), as the first member
        chosen, records = dict(recorded["chosen"]), recorded["candidates"]
        model, picked = _fit_config(name, info, F_train, y_train.to_numpy(), chosen, replace(settings, ensemble=1), seed)
    elif selection:
        single = replace(settings, ensemble=1) if grow else settings
        model, chosen, records = select_protocol(name, info, F_train, y_train.to_numpy(), selection, single, seed,
                                                 checkpoint=checkpoint, resume=resume)
        picked = next(r for r in records if r["config"] == chosen)
    else:
        model.fit(F_train, y_train.to_numpy())
    if grow:
        model = _seed_ensemble(model, settings, seed).fit_from(model, F_train, y_train.to_numpy())
    net = model
    if _tunes_threshold(name, settings, info.kind):
        model = tune_threshold(net, F_train, y_train.to_numpy())
    t_fit = time.perf_counter() - start
    # the test part is read here, once the model (and its configuration) is fixed
    score, other_scores, pred = _score(info, y_test.to_numpy(), model, F_test)
    entry = {"seed": seed, "fold": fold, "score": score, **other_scores, "featurize_s": t_featurize, "fit_s": t_fit,
             "features_reused": reused, "n_train": len(y_train), "n_test": len(y_test),
             "y_true": y_test.astype(float).tolist(), "y_pred": pred.tolist()}
    if settings.ensemble > 1 and MODELS[name].is_network:
        entry["ensemble"] = {"n_estimators": settings.ensemble, "seeds": [int(s) for s in net.seeds_]}
    if selection:
        entry.update({k: picked[k] for k in ("best_epoch", "validation_score", "epochs_run", "hit_cap", "members")
                      if k in picked})
        entry["selection"] = {"chosen": chosen, "candidates": records}
        if grow and recorded is not None:
            entry["selection"]["recorded_in"] = recorded["file"]
        if grow:  # the selected net is the first member: its validation_score is on the seed's shared split
            entry["ensemble"]["of_selected"] = True
            entry["ensemble"]["members"] = _fit_record(net, settings.max_epochs)["members"][1:]
            # the chosen net alone on the same test fold: the ensemble's gain, paired (reported, never selected on)
            entry["ensemble"]["first_member_score"] = _score(info, y_test.to_numpy(), net.estimators_[0], F_test)[0]
    else:
        entry.update(_fit_record(net, settings.max_epochs))
    return entry
