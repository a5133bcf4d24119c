"""The new user's check (issue 33): what the README's pipeline gives with its defaults.

500 random MatBench dielectric crystals (seed 0), 5-fold CV (shuffled, seed 0), MAE of the
refractive index: ``SiteSetFeaturizer("V1") -> AtomSetsRegressor()`` with the defaults as they
are now and with the old default loss (``loss="mse"``), V0+V1 sets, and a random forest on
matminer's Magpie composition features (``ElementProperty.from_preset("magpie")``), all on
the same folds.

    MATMINER_DATA=../shared/data/matbench python benchmarks/new_user_check.py [--n 500]
"""

import argparse
import os
import time

import numpy as np
from sklearn.ensemble import RandomForestRegressor
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold
from sklearn.pipeline import make_pipeline

from sklearn_atomsets import AtomSetsRegressor, MatminerFeatures, SiteSetFeaturizer, load_matbench_task


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=500)
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average at start: {os.getloadavg()[0]:.2f}")
    task = load_matbench_task("matbench_dielectric")
    pick = np.random.default_rng(0).choice(len(task.inputs), size=args.n, replace=False)
    structures = [task.inputs.iloc[i] for i in pick]
    y = task.targets.to_numpy(dtype=float)[pick]
    from matminer.featurizers.composition import ElementProperty

    t0 = time.time()
    V1 = np.array(SiteSetFeaturizer("V1").transform(structures), dtype=object).ravel()
    V0V1 = np.array(SiteSetFeaturizer(("V0", "V1")).transform(structures), dtype=object).ravel()
    magpie = MatminerFeatures([ElementProperty.from_preset("magpie")]).fit_transform(structures)
    print(f"{args.n} dielectric crystals featurized in {time.time() - t0:.0f} s")
    models = {
        "AtomSetsRegressor() defaults, V1 sets": (V1, lambda: AtomSetsRegressor(random_state=0)),
        "AtomSetsRegressor(loss='mse') (the old default), V1 sets": (V1, lambda: AtomSetsRegressor(loss="mse",
                                                                                                   random_state=0)),
        "RF on Magpie (500 trees)": (magpie, lambda: make_pipeline(SimpleImputer(), RandomForestRegressor(
            n_estimators=500, random_state=0, n_jobs=1))),
    }
    models["AtomSetsRegressor() defaults, V0+V1 sets"] = (V0V1, lambda: AtomSetsRegressor(random_state=0))
    for label, (X, make) in models.items():
        maes, t0 = [], time.time()
        for train, test in KFold(5, shuffle=True, random_state=0).split(y):
            model = make().fit(X[train], y[train])
            maes.append(float(np.abs(model.predict(X[test]) - y[test]).mean()))
        print(f"  {label:58s} MAE {np.mean(maes):.3f} ± {np.std(maes):.3f}  "
              f"(folds {', '.join(f'{m:.3f}' for m in maes)}; {time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
