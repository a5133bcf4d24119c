"""The benchmark's models as data (sklearn_atomsets.matbench.models): specs, pipelines, and labels that
read back to what wrote them."""

from __future__ import annotations

import itertools

import pytest

from sklearn_atomsets import (AtomicNumberSetFeaturizer, ElementSetFeaturizer, SetsAndDescriptors, SiteSetFeaturizer,
                              StructureFeaturizer)
from sklearn_atomsets.matbench import (MATBENCH_TASKS, MODELS, ModelLabel, ModelSpec, TrainingSettings, make_model,
                                       model_label, parse_model_label)

STEELS, JDFT2D, GLASS = (MATBENCH_TASKS[t] for t in ("matbench_steels", "matbench_jdft2d", "matbench_glass"))


def test_every_label_the_runner_writes_reads_back_to_its_model_and_settings():
    count = 0
    for name, readout, ensemble, threshold, select_readout in itertools.product(
            MODELS, ("mean", "set2set"), (1, 5), ("0.5", "validation"), (False, True)):
        settings = TrainingSettings(readout=readout, ensemble=ensemble, threshold=threshold)
        selection = {"readout": ("mean", "set2set")} if select_readout else None
        label = model_label(name, settings, selection, kind="classification")
        spec = MODELS[name]
        expected = ModelLabel(
            name,
            readout if spec.has_readout and readout != "mean" and not select_readout else None,
            ensemble if spec.is_network else 1,
            threshold == "validation" and spec.is_network)
        assert parse_model_label(label) == expected, label
        count += 1
    assert count == 16 * len(MODELS)
    assert parse_model_label("AtomSets-V2 [SevenNet-0] x5").spec.parent == "SevenNet-0"


@pytest.mark.parametrize("label", ["AtomSets (validation-selected)", "GPT", "AMM-style x5", "MLP-f (set2set)",
                                   "AMM-style (validation threshold)", "AtomSets x1", "AtomSets-V9"])
def test_what_is_not_a_runner_label_is_named(label):
    with pytest.raises(ValueError, match="is not a model label"):
        parse_model_label(label)


def test_specs_build_the_pipelines_they_describe():
    for name, spec in MODELS.items():
        for info in (STEELS, JDFT2D):
            if info.input not in spec.inputs:
                with pytest.raises(ValueError, match="does not apply"):
                    make_model(name, info)
                continue
            pipe = make_model(name, info)
            if not spec.is_network:
                assert type(pipe[-1]).__name__.startswith("RandomForest")
                continue
            featurizer = pipe[0]
            if spec.descriptors:  # the sets beside the parent's descriptor preset, selected on training rows
                assert isinstance(featurizer, SetsAndDescriptors) and "impute" in pipe.named_steps
                assert pipe[-1].descriptor_selector.n_features == TrainingSettings().n_descriptors
                assert featurizer.descriptors.parents == (spec.parent,)
                featurizer = featurizer.sets
            else:
                assert len(pipe) == 2
            assert isinstance(featurizer, AtomicNumberSetFeaturizer) or featurizer.parent == spec.parent
            if spec.estimator == "mlp":
                assert isinstance(featurizer, StructureFeaturizer) and featurizer.layers == ("f",)
            elif not spec.layers:
                assert isinstance(featurizer, AtomicNumberSetFeaturizer)
            elif info.input == "composition":
                assert isinstance(featurizer, ElementSetFeaturizer)
            else:
                assert isinstance(featurizer, SiteSetFeaturizer)
                assert featurizer.layer == (spec.layers[0] if len(spec.layers) == 1 else spec.layers)
    assert [n for n, s in MODELS.items() if "composition" in s.inputs] == [
        "AtomSets", "AtomSets-V0", "AtomSets-V0 [CHGNet-0.3.0]", "AtomSets-V0 + descriptors", "AMM-style",
        "AMM-style + MEGNet"]
    megnet = make_model("AMM-style + MEGNet", GLASS)[0]
    assert any(type(f).__name__ == "CompositionFeaturizer" for f in megnet.featurizers)


def test_the_number_of_descriptors_is_a_setting_only_of_the_models_with_descriptors():
    from sklearn_atomsets.matbench import candidate_configs
    from sklearn_atomsets.matbench.results import _model_settings

    grid = {"n_descriptors": (32, 128), "readout": ("mean", "set2set")}
    assert candidate_configs("AtomSets-V0 + descriptors", STEELS, grid) == [
        {"n_descriptors": n, "readout": r} for n in (32, 128) for r in ("mean", "set2set")]
    assert candidate_configs("AtomSets-V0", STEELS, grid) == [{"readout": "mean"}, {"readout": "set2set"}]
    settings = TrainingSettings(n_descriptors=32)
    assert _model_settings("AtomSets-V0 + descriptors", STEELS, settings)["n_descriptors"] == 32
    assert "n_descriptors" not in _model_settings("AtomSets-V0", STEELS, settings)
    assert make_model("AtomSets-V0 + descriptors", STEELS, settings)[-1].descriptor_selector.n_features == 32


def test_a_spec_that_cannot_be_built_is_refused():
    with pytest.raises(ValueError, match="estimator should be one of"):
        ModelSpec("X", "gbm")
    with pytest.raises(ValueError, match="reads the readout vector"):
        ModelSpec("X", "mlp", layers=("V1",))
    with pytest.raises(ValueError, match="element sets only"):
        ModelSpec("X", "atomsets", ("composition",), ("V1",))
    with pytest.raises(ValueError, match="join a set model"):
        ModelSpec("X", "mlp", layers=("f",), descriptors=True)
