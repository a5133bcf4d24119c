"""How much of the composition-only tasks' training work repeats: rows whose reduced composition occurs
more than once, and how many of those repeated compositions carry one target value.

A composition-only model sees the same input for every row of one reduced composition, so those rows are
the only candidates for removing training work the way equal site rows are merged
(``_sets.merge_equal_rows``). Merging is exact only where the targets agree as well; where they differ
(polymorphs), one row with several targets changes which rows share a minibatch, so it is not.

    MATMINER_DATA=../shared/data/matbench python benchmarks/repeated_compositions.py
"""

from __future__ import annotations

import pandas as pd
from pymatgen.core import Composition

from sklearn_atomsets.matbench import load_matbench_composition_task

TASKS = ("log_gvrh", "log_kvrh", "perovskites", "mp_is_metal", "mp_gap", "mp_e_form")


def repeats(formulas, targets):
    """(rows, distinct reduced compositions, repeated compositions, repeated ones with a single target)."""
    key = pd.Series([Composition(formula).reduced_formula for formula in formulas], index=targets.index)
    targets = targets.groupby(key)
    repeated = targets.size() > 1
    single_target = repeated & (targets.max() == targets.min())
    return len(key), key.nunique(), int(repeated.sum()), int(single_target.sum())


def main():
    for task in TASKS:
        data = load_matbench_composition_task(f"matbench_{task}")  # the runner's own loader and files
        rows, distinct, repeated, single = repeats(data.inputs, data.targets)
        print(f"{task}: {rows} rows, {distinct} distinct reduced compositions ({1 - distinct / rows:.1%} of rows "
              f"repeat one); {repeated} repeated compositions, {single} of them with one target value")


if __name__ == "__main__":
    main()
