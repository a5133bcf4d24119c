"""Does MutualInfoSelector (NMI relevance-redundancy, MODNet's idea) help a learner on matminer
descriptors, compared with all descriptors and with sklearn's SelectKBest(mutual_info_regression)?

MatBench steels (312 compositions, official folds, MAE in MPa) and expt_gap (4604 compositions,
official folds, MAE in eV; --tasks to choose). Descriptors: the AutoMatminer-style composition
set (``default_matminer_featurizers("composition")``: Magpie, stoichiometry, valence orbitals,
ion property, band centre), cleaned as the baseline cleans them (columns mostly missing
dropped, the rest imputed). Learner: a 300-tree random forest. The number of features is
chosen per outer fold by 5-fold GridSearchCV on that fold's training rows only.

    MATMINER_DATA=../shared/data/matbench python benchmarks/feature_selection.py [--tasks steels]
"""

import argparse
import os
import time

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.feature_selection import SelectKBest, mutual_info_regression
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline

from sklearn_atomsets import MatminerFeatures, MutualInfoSelector
from sklearn_atomsets.matbench import load_matbench_composition_task

SIZES = [16, 32, 64, 128]


def learner(seed):
    return RandomForestRegressor(n_estimators=300, n_jobs=1, random_state=seed)


def models(seed):
    impute = lambda: SimpleImputer(strategy="median", keep_empty_features=True)  # noqa: E731
    return {
        "RF, all descriptors": make_pipeline(impute(), learner(seed)),
        "RF, MutualInfoSelector (n by inner CV)": GridSearchCV(
            make_pipeline(impute(), MutualInfoSelector(), learner(seed)),
            {"mutualinfoselector__n_features": SIZES}, cv=KFold(5, shuffle=True, random_state=seed),
            scoring="neg_mean_absolute_error"),
        "RF, SelectKBest(mutual_info_regression) (k by inner CV)": GridSearchCV(
            make_pipeline(impute(), SelectKBest(lambda X, y: mutual_info_regression(X, y, random_state=seed)),
                          learner(seed)),
            {"selectkbest__k": SIZES}, cv=KFold(5, shuffle=True, random_state=seed),
            scoring="neg_mean_absolute_error"),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--tasks", nargs="+", default=["steels"])
    parser.add_argument("--folds", type=int, default=5)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    for name in args.tasks:
        task = load_matbench_composition_task(f"matbench_{name}")
        t0 = time.time()
        X = MatminerFeatures(input_kind="composition").fit_transform(list(task.inputs))
        X = X[:, np.isnan(X).mean(axis=0) < 0.5]  # the baseline's MissingColumnFilter
        y = task.targets.to_numpy(dtype=float)
        print(f"\n{task.name}: {X.shape[0]} rows, {X.shape[1]} descriptors ({time.time() - t0:.0f} s to featurize)")
        scores = {}
        for fold in range(args.folds):
            train, test = task.folds[fold]
            for label, model in models(seed=fold).items():
                t0 = time.time()
                model.fit(X[train], y[train])
                mae = float(np.abs(model.predict(X[test]) - y[test]).mean())
                chosen = getattr(model, "best_params_", {})
                scores.setdefault(label, []).append(mae)
                print(f"  fold {fold}  {label:58s} MAE {mae:9.4f}  {chosen}  ({time.time() - t0:.0f} s)")
        print(f"{task.name}, mean ± std over {args.folds} folds:")
        for label, values in scores.items():
            print(f"  {label:58s} {np.mean(values):9.4f} ± {np.std(values):.4f}")


if __name__ == "__main__":
    main()
