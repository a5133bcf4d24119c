"""Put the inner-validation scores of older MatBench result files into the runner's current units.

    MATMINER_DATA=../shared/data/matbench python benchmarks/convert_validation_units.py \
        benchmarks/results/matbench/matbench_*.json

Until 2026-11-26 14:17 the regressors' inner-validation score (what the validation-selected
row compares) was the MAE of the *standardised* targets; since then it is the MAE in the
target's units (``VALIDATION_UNITS`` in ``sklearn_atomsets/matbench/results.py``). The two cannot be
compared, so ``benchmarks/report.py`` refuses to select among candidates whose units differ.

The regressors standardise ``y`` with the mean and population standard deviation of the
targets given to ``fit`` (the whole training fold; ``target_scale_``), so an old score times
that standard deviation is the MAE in target units, exactly up to float32 rounding. This
script applies that to every regression file that has no ``validation_units`` and whose fits
carry no seed (files written before the runner recorded seeds, 2026-11-26 15:04); the old
value is kept as ``validation_score_standardised`` and the file says what was done in its
notes. Classification scores (ROC-AUC from probabilities) did not change: such files, and
unmarked regression files whose fits carry seeds (written later, already in target units),
only get the ``validation_units`` field. Files that have it are left alone.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

NOTE = ("Inner-validation scores converted on {date} from MAE of standardised targets to target units "
        "(x the population std of each training fold's targets; benchmarks/convert_validation_units.py).")


def convert(result, fold_targets, date):
    """Convert one result in place; ``fold_targets(fold)`` gives that fold's training targets.
    Returns what was done: 'converted', 'marked' or 'unchanged'."""
    from sklearn_atomsets.matbench import VALIDATION_UNITS

    if "validation_units" in result:
        return "unchanged"
    kind = "regression" if result["metric"] == "mae" else "classification"
    fits = [f for m in result["models"].values() for f in m["folds"]]
    legacy = kind == "regression" and not any("seed" in f for f in fits)
    if legacy:
        scale = {}
        for f in fits:
            if f.get("validation_score") is None:
                continue
            if f["fold"] not in scale:
                scale[f["fold"]] = float(np.std(np.asarray(fold_targets(f["fold"]), dtype=float)))
            f["validation_score_standardised"] = f["validation_score"]
            f["validation_score"] = f["validation_score"] * scale[f["fold"]]
        result.setdefault("notes", []).append(NOTE.format(date=date))
    result["validation_units"] = VALIDATION_UNITS[kind]
    return "converted" if legacy else "marked"


def main(paths):
    import datetime

    from sklearn_atomsets.matbench import load_matbench_composition_task, load_matbench_task

    date = datetime.date.today().isoformat()
    for path in map(Path, paths):
        result = json.loads(path.read_text())
        load = load_matbench_composition_task if result.get("composition_only") else load_matbench_task
        task = {}

        def fold_targets(fold):
            if "task" not in task:
                task["task"] = load(result["task"])
            return task["task"].split(fold)[1]

        done = convert(result, fold_targets, date)
        if done != "unchanged":
            path.write_text(json.dumps(result, indent=1) + "\n")
        print(f"{path}: {done}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
