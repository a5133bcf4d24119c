"""Does choosing weight decay, dropout, a learning-rate schedule or standardised inputs on inner validation help?

    python benchmarks/protocol_options.py                 # run what is missing (2 processes), then summarise
    python benchmarks/protocol_options.py --summary-only  # the summary of what is on disk
    python benchmarks/protocol_options.py --tasks matbench_jdft2d  # one task's runs only

For each case (folder, task, model, base configuration) below, five runs of the MatBench runner with
the full protocol's epochs (patience 200, cap 2000), 3 seeds and the 5 official folds, each in its own
folder under ``results/studies/protocol_options/<case folder>/<variant>/``:

- ``base``: the base configuration alone (one candidate: no choice);
- ``weight_decay``, ``dropout``, ``lr_schedule``, ``standardize_features``: ``--select`` between
  the base value and one alternative of that option (weight decay 1e-4, dropout 0.1, halving the
  rate on plateaus, feature rows standardised over the training fold), the
  choice made per fit on the inner-validation score, exactly as the full protocol chooses loss
  and readout.

The base configuration of each model is the loss and readout its full-protocol job chose most
often on inner validation (``results/matbench_seeds/jobs``): jdft2d AtomSets-V2 [CHGNet-0.3.0]
L1 + mean (6 of 15 fits), steels AtomSets-V0 L1 + set2set (7 of 15), jdft2d MLP-f [CHGNet-0.3.0]
L1 (11 of 15; MLP-f has no readout), jdft2d MLP-f (default parent) L1 (14 of 15). A variant's candidate with
the base value is the base run's net itself (same seed, split and initialisation), so the paired
difference (variant - base, per seed the mean over folds) is the effect of letting the option be
chosen. Nothing here reads a test fold to choose: the test scores are only reported.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from report import paired_by_seed  # noqa: E402  (benchmarks/report.py)
from study_runs import run_all, study_parser  # noqa: E402  (benchmarks/study_runs.py)

OUT = HERE / "results" / "studies" / "protocol_options"

#: (folder, task, model, base configuration): each base is what that model's full-protocol job chose most often
CASES = [("matbench_jdft2d", "matbench_jdft2d", "AtomSets-V2 [CHGNet-0.3.0]", {"loss": "mae", "readout": "mean"}),
         ("matbench_steels", "matbench_steels", "AtomSets-V0", {"loss": "mae", "readout": "set2set"}),
         ("matbench_jdft2d MLP-f [CHGNet-0.3.0]", "matbench_jdft2d", "MLP-f [CHGNet-0.3.0]", {"loss": "mae"}),
         ("matbench_jdft2d MLP-f", "matbench_jdft2d", "MLP-f", {"loss": "mae"})]
#: the option's base value first
OPTIONS = {"weight_decay": (0.0, 1e-4), "dropout": (0.0, 0.1), "lr_schedule": ("none", "plateau"),
           "standardize_features": (False, True)}
VARIANTS = ["base", *OPTIONS]
PROTOCOL = ["--seeds", "0", "1", "2", "--max-epochs", "2000", "--patience", "200", "--threads", "1"]


def grid(base, variant):
    """The ``--select`` entries of one variant."""
    entries = [f"{k}={v}" for k, v in base.items()]
    if variant in OPTIONS:
        entries.append(f"{variant}={','.join(map(str, OPTIONS[variant]))}")
    return entries


def folder(case, variant, out=OUT):
    return out / case / variant


def run_args(model, base, variant):
    """The runner's arguments for one variant of a case (besides task and output folder)."""
    return ["--models", model, *PROTOCOL, "--select", *grid(base, variant)]


def fits(case, task, variant, out=OUT):
    """``{(seed, fold): fit}`` of one variant's run."""
    result = json.loads((folder(case, variant, out) / f"{task}.json").read_text())
    (m,) = result["models"].values()
    return {(f["seed"], f["fold"]): f for f in m["folds"]}


def summary(out=OUT):
    """One line per (case, variant): mean ± seed std, the paired difference from the base run and
    how often the option's alternative was chosen."""
    lines = []
    for case, task, model, base in CASES:
        if not (folder(case, "base", out) / f"{task}.json").is_file():
            continue
        base_fits = fits(case, task, "base", out)
        for variant in VARIANTS:
            if not (folder(case, variant, out) / f"{task}.json").is_file():
                continue
            mine = fits(case, task, variant, out)
            if set(mine) != set(base_fits):
                raise ValueError(f"{case} {variant}: other seeds and folds than the base run")
            by_seed = {}
            for key, f in mine.items():
                by_seed.setdefault(key[0], []).append(f["score"])
            means = [statistics.fmean(v) for v in by_seed.values()]
            paired, better = paired_by_seed((key[0], f["score"], base_fits[key]["score"]) for key, f in mine.items())
            line = (f"{task} {model} {variant}: MAE {statistics.fmean(means):.4g} ± {statistics.stdev(means):.2g} "
                    f"over {len(means)} seeds")
            if variant != "base":
                chosen = [f["selection"]["chosen"][variant] for f in mine.values()]
                moved = sum(c != OPTIONS[variant][0] for c in chosen)
                line += (f"; minus base {statistics.fmean(paired):+.3g} ± {statistics.stdev(paired):.2g} over seeds "
                         f"(per seed {', '.join(f'{x:+.3g}' for x in paired)}); an alternative chosen in {moved} of "
                         f"{len(chosen)} fits, better than base on test in {better}")
            lines.append(line)
    return lines


def main(argv=None):
    parser = study_parser(__doc__, OUT)
    tasks = sorted({task for _, task, _, _ in CASES})
    parser.add_argument("--tasks", nargs="+", default=tasks, choices=tasks)
    args = parser.parse_args(argv)
    if not args.summary_only:
        run_all([(f"{case} {variant}", task, folder(case, variant, args.out), run_args(model, base, variant))
                 for case, task, model, base in CASES if task in args.tasks for variant in VARIANTS], args.processes)
    print("\n".join(summary(args.out)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
