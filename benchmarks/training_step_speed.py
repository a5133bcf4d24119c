"""Training-epoch time of AtomSets nets with and without the two exact speed-ups, side by side.

    python benchmarks/training_step_speed.py [--epochs 8] [--rounds 3] [--task matbench_expt_gap]

- fused Adam (``_estimators._FUSED_ADAM``): torch's fused Adam kernel instead of its per-tensor loop;
- reduced set2set (``_atomsets._REDUCED_SET2SET``): the readout's LSTM cell written out, with
  the first step's gates taken from the biases and one product per later step.

Both compute the same function and update (tests/test_atomsets_module.py,
tests/test_estimators.py); only rounding differs. Data: the AtomSets-V0 sets of the MatBench
task's compositions (MEGNet V0 rows weighted by atom fraction; all rows, not tiled), trained
as the MatBench protocol trains them: one torch thread, batch 128, 10% inner validation. Each
configuration fits ``--epochs`` epochs per round and reports skorch's per-epoch ``dur``
(median over the epochs after the first); the configurations take turns, ``--rounds``
times, so that load from other jobs on a shared machine falls on all of them alike. Ratios
are taken within each round and their median over rounds is printed with their range. The
1-minute load average is printed; the ratios, not the seconds, are the result.
Writes benchmarks/results/training_step_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent

# (readout, fused Adam, reduced set2set)
CONFIGS = {
    "mean, before": ("mean", False, False),
    "mean, fused Adam": ("mean", True, False),
    "set2set, before": ("set2set", False, False),
    "set2set, fused Adam": ("set2set", True, False),
    "set2set, reduced set2set": ("set2set", False, True),
    "set2set, both": ("set2set", True, True),
}


def epoch_time(sets, y, readout, fused, reduced, epochs):
    from sklearn_atomsets import AtomSetsRegressor, _atomsets, _estimators

    switches = _estimators._FUSED_ADAM, _atomsets._REDUCED_SET2SET
    _estimators._FUSED_ADAM, _atomsets._REDUCED_SET2SET = fused, reduced
    try:
        model = AtomSetsRegressor(readout=readout, max_epochs=epochs, patience=epochs, n_jobs=1,
                                  random_state=0).fit(sets, y)
    finally:
        _estimators._FUSED_ADAM, _atomsets._REDUCED_SET2SET = switches
    assert model.net_.optimizer_.defaults.get("fused") is (True if fused else None)
    return float(np.median(list(model.net_.history[1:, "dur"])))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", default="matbench_expt_gap")
    parser.add_argument("--epochs", type=int, default=8, help="epochs per fit; the first is not timed")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch is not timed)")
    import torch

    from sklearn_atomsets import MEGNetElementSetFeaturizer
    from sklearn_atomsets.matbench import load_matbench_task

    task = load_matbench_task(args.task, download=False)
    sets = [row[0] for row in MEGNetElementSetFeaturizer().featurize_many(task.inputs, pbar=False)]
    y = task.targets.to_numpy(np.float32)
    print(f"{args.task}: {len(sets)} V0 sets; torch {torch.__version__}, 1 thread, {os.cpu_count()} CPUs; "
          f"{args.epochs} epochs per fit, {args.rounds} rounds")
    times = {name: [] for name in CONFIGS}
    for k in range(args.rounds):
        print(f"round {k + 1} [load average {os.getloadavg()[0]:.2f}]", flush=True)
        for name, config in CONFIGS.items():
            times[name].append(epoch_time(sets, y, *config, args.epochs))
    result = {"command": "python benchmarks/training_step_speed.py " + " ".join(
        argv if argv is not None else sys.argv[1:]), "task": args.task, "n_sets": len(sets),
        "torch": torch.__version__, "cpus": os.cpu_count(), "epochs": args.epochs, "rounds": args.rounds,
        "s_per_epoch": {}, "ratios": {}}
    for name, values in times.items():
        result["s_per_epoch"][name] = float(np.median(values))
        print(f"{name:<26} {np.median(values):.3f} s per epoch (rounds: {', '.join(f'{v:.3f}' for v in values)})")
    # ratios within each round (the configurations of a round ran minutes apart, under the same
    # load), then their median over rounds and their range
    t = {name: np.array(values) for name, values in times.items()}
    paired = {
        "mean: before / fused Adam": t["mean, before"] / t["mean, fused Adam"],
        "set2set: before / fused Adam": t["set2set, before"] / t["set2set, fused Adam"],
        "set2set: before / reduced set2set": t["set2set, before"] / t["set2set, reduced set2set"],
        "set2set: before / both": t["set2set, before"] / t["set2set, both"],
        # a regression fit's selection trains each loss with both readouts, for about as many epochs
        "one mean + one set2set net: before / now": (t["mean, before"] + t["set2set, before"])
        / (t["mean, fused Adam"] + t["set2set, both"]),
    }
    for name, ratios in paired.items():
        print(f"ratio {name:<42} {np.median(ratios):.2f}x (per round {ratios.min():.2f}-{ratios.max():.2f})")
        result["ratios"][name] = {"median": float(np.median(ratios)), "per_round": ratios.tolist()}
    out = HERE / "results"
    out.mkdir(exist_ok=True)
    (out / "training_step_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
