"""The MatBench v0.1 benchmark: tasks and official folds, the models, the protocol, running, results.

One room per concern, data flowing one way::

    tasks (data, folds, anchors) -> models (featurizer -> estimator pipelines, their labels)
        -> protocol (training settings, selection grids) -> selection (on inner validation)
        -> running (a task's folds and seeds) -> results (scores, the file schema, merging)

``python -m sklearn_atomsets matbench`` runs it; ``benchmarks/`` holds only the scripts that
plan, run, print and plot.
"""

from .models import MODELS, ModelLabel, ModelSpec, make_model, model_label, models_for, parse_model_label
from .protocol import DEFAULT_SELECTION, TrainingSettings, parse_selection, step_epochs, train_steps
from .results import VALIDATION_UNITS, classification_scores, merge_results, summarise_fits, summary_lines
from .running import run_matbench_task
from .selection import candidate_configs, recorded_selections, select_protocol, tune_threshold
from .tasks import ANCHORS, MATBENCH_TASKS, MatbenchTask, find_matbench_data, load_matbench_composition_task, load_matbench_task

__all__ = [
    "ANCHORS",
    "DEFAULT_SELECTION",
    "MATBENCH_TASKS",
    "MODELS",
    "MatbenchTask",
    "ModelLabel",
    "ModelSpec",
    "TrainingSettings",
    "VALIDATION_UNITS",
    "candidate_configs",
    "classification_scores",
    "find_matbench_data",
    "load_matbench_composition_task",
    "load_matbench_task",
    "make_model",
    "merge_results",
    "model_label",
    "models_for",
    "parse_model_label",
    "parse_selection",
    "recorded_selections",
    "run_matbench_task",
    "select_protocol",
    "step_epochs",
    "summarise_fits",
    "summary_lines",
    "train_steps",
    "tune_threshold",
]
