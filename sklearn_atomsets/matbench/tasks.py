"""MatBench v0.1 tasks: finding the data, the official folds, and the leaderboard anchors.

Data is looked for, in order, in ``$MATMINER_DATA``, in ``../shared/data/matbench`` beside
a source checkout, then through matminer's own download. Folds are the official ones that
the PyPI package ``matbench`` ships (``matbench_v0.1_validation.json``: 5 folds, shuffled
with seed 18012019), matched to rows by MatBench ids (``mb-<task>-<row+1>``).
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = [
    "ANCHORS",
    "MATBENCH_TASKS",
    "MatbenchTask",
    "find_matbench_data",
    "load_matbench_composition_task",
    "load_matbench_task",
]


@dataclass(frozen=True)
class TaskInfo:
    target: str
    input: str  # "composition" or "structure"
    kind: str  # "regression" or "classification"
    unit: str = ""

    @property
    def metric(self):
        return "mae" if self.kind == "regression" else "rocauc"


MATBENCH_TASKS = {
    "matbench_steels": TaskInfo("yield strength", "composition", "regression", "MPa"),
    "matbench_expt_gap": TaskInfo("gap expt", "composition", "regression", "eV"),
    "matbench_expt_is_metal": TaskInfo("is_metal", "composition", "classification"),
    "matbench_glass": TaskInfo("gfa", "composition", "classification"),
    "matbench_jdft2d": TaskInfo("exfoliation_en", "structure", "regression", "meV/atom"),
    "matbench_phonons": TaskInfo("last phdos peak", "structure", "regression", "cm^-1"),
    "matbench_dielectric": TaskInfo("n", "structure", "regression", ""),
    "matbench_log_gvrh": TaskInfo("log10(G_VRH)", "structure", "regression", "log10(GPa)"),
    "matbench_log_kvrh": TaskInfo("log10(K_VRH)", "structure", "regression", "log10(GPa)"),
    "matbench_perovskites": TaskInfo("e_form", "structure", "regression", "eV/unit cell"),
    "matbench_mp_gap": TaskInfo("gap pbe", "structure", "regression", "eV"),
    "matbench_mp_is_metal": TaskInfo("is_metal", "structure", "classification"),
    "matbench_mp_e_form": TaskInfo("e_form", "structure", "regression", "eV/atom"),
}

# MatBench v0.1 leaderboard, mean over the 5 folds: AMMExpress v2020, RF-SCM/Magpie, MODNet
# v0.1.12, MEGNet (kgcnn v2.1.0), Dummy, and the task's best entry (the matbench repository's
# per-task leaderboards, as copied to ../shared/anchors/matbench_leaderboard.txt).
ANCHORS = {
    "matbench_steels": {"AMMExpress v2020": 97.49, "RF-SCM/Magpie": 103.51, "MODNet v0.1.12": 87.76,
                        "Dummy": 229.74, "best (TPOT-Mat)": 79.95},
    "matbench_jdft2d": {"AMMExpress v2020": 39.85, "RF-SCM/Magpie": 50.04, "MODNet v0.1.12": 33.19,
                        "MEGNet (kgcnn)": 54.17, "Dummy": 67.29, "best (MODNet)": 33.19},
    "matbench_phonons": {"AMMExpress v2020": 56.17, "RF-SCM/Magpie": 67.61, "MODNet v0.1.12": 34.28,
                         "MEGNet (kgcnn)": 28.76, "Dummy": 323.98, "best (MEGNet)": 28.76},
    "matbench_expt_gap": {"AMMExpress v2020": 0.4161, "RF-SCM/Magpie": 0.4461, "MODNet v0.1.12": 0.3327,
                          "Dummy": 1.1435, "best (Darwin)": 0.2865},
    "matbench_expt_is_metal": {"AMMExpress v2020": 0.9209, "RF-SCM/Magpie": 0.9167, "MODNet v0.1.12": 0.9161,
                               "Dummy": 0.4924, "best (Darwin)": 0.9598},
    "matbench_glass": {"AMMExpress v2020": 0.8607, "RF-SCM/Magpie": 0.8587, "MODNet v0.1.12": 0.9603,
                       "Dummy": 0.5005, "best (MODNet)": 0.9603},
    "matbench_dielectric": {"AMMExpress v2020": 0.3150, "RF-SCM/Magpie": 0.4196, "MODNet v0.1.12": 0.2711,
                            "MEGNet (kgcnn)": 0.3391, "Dummy": 0.8088, "best (MODNet)": 0.2711},
    # the six tasks run here on compositions only: their leaderboard entries used the structures
    "matbench_log_gvrh": {"AMMExpress v2020": 0.0874, "RF-SCM/Magpie": 0.1040, "MODNet v0.1.12": 0.0731,
                          "MEGNet (kgcnn)": 0.0871, "Dummy": 0.2931, "best (coNGN)": 0.0670},
    "matbench_log_kvrh": {"AMMExpress v2020": 0.0647, "RF-SCM/Magpie": 0.0820, "MODNet v0.1.12": 0.0548,
                          "MEGNet (kgcnn)": 0.0668, "Dummy": 0.2897, "best (coNGN)": 0.0491},
    "matbench_perovskites": {"AMMExpress v2020": 0.2005, "RF-SCM/Magpie": 0.2355, "MODNet v0.1.12": 0.0908,
                             "MEGNet (kgcnn)": 0.0352, "Dummy": 0.5660, "best (coGN)": 0.0269},
    "matbench_mp_gap": {"AMMExpress v2020": 0.2824, "RF-SCM/Magpie": 0.3452, "MODNet v0.1.12": 0.2199,
                        "MEGNet (kgcnn)": 0.1934, "Dummy": 1.3272, "best (coGN)": 0.1559},
    "matbench_mp_is_metal": {"AMMExpress v2020": 0.9093, "RF-SCM/Magpie": 0.8992, "MODNet v0.1.12": 0.9038,
                             "MEGNet (kgcnn)": 0.9021, "Dummy": 0.5012, "best (CGCNN v2019)": 0.9520},
    "matbench_mp_e_form": {"AMMExpress v2020": 0.1726, "RF-SCM/Magpie": 0.1165, "MODNet v0.1.12": 0.0448,
                           "MEGNet (kgcnn)": 0.0252, "Dummy": 1.0059, "best (coGN)": 0.0170},
}

# Tasks whose structures in ../shared were rebuilt from 6-decimal text (see its README).
_APPROXIMATE = {"matbench_jdft2d", "matbench_phonons"}

_HINT = (
    "Set MATMINER_DATA to a folder holding matbench_<task>.json.gz (as matminer downloads "
    "them), or run once on a machine with internet so matminer can download the data."
)


def _checkout_shared():
    """``../shared/data/matbench`` beside a source checkout of this package, if any."""
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "matbench"  # <checkout>/sklearn_atomsets/matbench/


def find_matbench_data(task):
    """Folder holding ``<task>.json.gz`` and whether its structures are approximate.

    Returns ``(folder, approximate)``, or ``(None, False)`` when only matminer's download
    is left.
    """
    candidates = []
    if os.environ.get("MATMINER_DATA"):
        candidates.append(Path(os.environ["MATMINER_DATA"]))
    candidates.append(_checkout_shared())
    for folder in candidates:
        if (folder / f"{task}.json.gz").is_file():
            return folder, False
        if task in _APPROXIMATE and (folder / "approx" / f"{task}.json.gz").is_file():
            return folder / "approx", True
    return None, False


# The folds are not rebuilt: they are read from the validation file of the matbench
# package, as its task objects (matbench.task.MatbenchTask) read them. Those objects are
# not used because they load the data only through matminer's default location (no
# data_home, none of the approximate copies in approx/, no composition-only files), and
# importing them (monty, matminer's conversions) took 22 s on the shared 2-core machine;
# tests/test_matbench.py checks that our folds are the task objects' folds.
def _official_folds():
    spec = importlib.util.find_spec("matbench")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "The official MatBench folds come with the PyPI package 'matbench'; install it "
            "without its (outdated) pins: pip install --no-deps matbench==0.6"
        )
    path = Path(spec.submodule_search_locations[0]) / "matbench_v0.1_validation.json"
    with open(path) as fh:
        return json.load(fh)


def _ids_and_folds(name, n_rows):
    """MatBench ids of rows in official order, and the official folds as row positions."""
    prefix = name.replace("matbench", "mb").replace("_", "-")
    width = math.floor(math.log(n_rows, 10)) + 1
    ids = [f"{prefix}-{i + 1:0{width}d}" for i in range(n_rows)]
    position = pd.Series(np.arange(n_rows), index=ids)
    splits = _official_folds()["splits"][name]
    if len(splits["fold_0"]["train"]) + len(splits["fold_0"]["test"]) != n_rows:
        raise ValueError(f"{name} has {n_rows} rows here but its official folds cover a different number.")
    folds = [
        (position.loc[splits[f"fold_{k}"]["train"]].to_numpy(), position.loc[splits[f"fold_{k}"]["test"]].to_numpy())
        for k in range(5)
    ]
    return ids, folds


@dataclass
class MatbenchTask:
    """One MatBench task: its data (indexed by MatBench id) and the official folds."""

    name: str
    info: TaskInfo
    inputs: pd.Series
    targets: pd.Series
    folds: list = field(repr=False)  # [(train positions, test positions)] x 5
    approximate: bool = False
    source: str = ""

    def split(self, fold):
        train, test = self.folds[fold]
        return (self.inputs.iloc[train], self.targets.iloc[train], self.inputs.iloc[test], self.targets.iloc[test])


def load_matbench_task(name, data_home=None, download=True):
    """Load a MatBench v0.1 task with its official five folds.

    Parameters
    ----------
    name : str
        e.g. ``"matbench_steels"``.
    data_home : path-like, optional
        Folder with ``<name>.json.gz``; by default found by :func:`find_matbench_data`.
    download : bool, default=True
        Let matminer download the data when no local copy is found.
    """
    from matminer.datasets import load_dataset

    if name not in MATBENCH_TASKS:
        raise ValueError(f"Unknown MatBench task {name!r}; choose from {sorted(MATBENCH_TASKS)}.")
    info = MATBENCH_TASKS[name]
    approximate = False
    if data_home is None:
        data_home, approximate = find_matbench_data(name)
    if data_home is None and not download:
        raise FileNotFoundError(f"No local copy of {name}. {_HINT}")
    try:
        df = load_dataset(name, data_home=None if data_home is None else str(data_home))
    except Exception as exc:  # matminer raises several types for a failed download
        raise FileNotFoundError(f"Could not load {name} ({type(exc).__name__}: {exc}). {_HINT}") from exc
    ids, folds = _ids_and_folds(name, len(df))
    inputs = pd.Series(df[info.input].to_numpy(), index=ids, name=info.input)
    targets = pd.Series(df[info.target].to_numpy(), index=ids, name=info.target)
    if info.kind == "classification":
        targets = targets.astype(bool)
    return MatbenchTask(name, info, inputs, targets, folds, approximate, str(data_home or "matminer download"))


def load_matbench_composition_task(name, data_home=None):
    """A MatBench task reduced to formula -> target, with the official folds.

    Reads ``composition_only/<name>.crabnet.csv.gz`` (formula and target in the official
    row order, as the CrabNet package ships them) from ``data_home`` or the folders of
    :func:`find_matbench_data`. Structural tasks become composition tasks: polymorphs
    share a formula, so the same input can carry different targets.
    """
    if name not in MATBENCH_TASKS:
        raise ValueError(f"Unknown MatBench task {name!r}; choose from {sorted(MATBENCH_TASKS)}.")
    file = f"{name}.crabnet.csv.gz"
    folders = [Path(data_home)] if data_home is not None else [
        *([Path(os.environ["MATMINER_DATA"])] if os.environ.get("MATMINER_DATA") else []), _checkout_shared()]
    path = next((f / "composition_only" / file for f in folders if (f / "composition_only" / file).is_file()), None)
    if path is None:
        raise FileNotFoundError(
            f"No composition-only copy of {name}: looked for composition_only/{file} in "
            f"{', '.join(str(f) for f in folders)}."
        )
    df = pd.read_csv(path, float_precision="round_trip")
    if list(df.columns) != ["formula", "target"]:
        raise ValueError(f"{path} should have the columns formula,target; it has {list(df.columns)}.")
    base = MATBENCH_TASKS[name]
    info = TaskInfo(base.target, "composition", base.kind, base.unit)
    ids, folds = _ids_and_folds(name, len(df))
    inputs = pd.Series(df["formula"].to_numpy(), index=ids, name="composition")
    targets = pd.Series(df["target"].to_numpy(), index=ids, name=info.target)
    if info.kind == "classification":
        targets = targets.astype(bool)
    return MatbenchTask(name, info, inputs, targets, folds, False, str(path))
