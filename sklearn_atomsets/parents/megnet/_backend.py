"""The reference backend: the original megnet Keras model (optional ``[megnet]`` extra).

megnet 1.3.2 is unmaintained. Two things stop it from importing on today's stack, and both
are handled here, in this module only, so that users never have to:

* pymatgen renamed ``BrunnerNN_real`` / ``_reciprocal`` / ``_relative`` to
  ``BrunnerNNReal`` / ``Reciprocal`` / ``Relative``; megnet imports the old names.
* TensorFlow >= 2.16 ships Keras 3, which cannot load megnet's models; the legacy
  ``tf-keras`` is used when ``TF_USE_LEGACY_KERAS=1`` is set before TensorFlow is imported.

The PyTorch encoder is tested against this backend.
"""

from __future__ import annotations

import os
import sys

import numpy as np

__all__ = ["MegnetReference", "import_megnet"]

_PYMATGEN_RENAMES = {
    "BrunnerNN_real": "BrunnerNNReal",
    "BrunnerNN_reciprocal": "BrunnerNNReciprocal",
    "BrunnerNN_relative": "BrunnerNNRelative",
}


def import_megnet():
    """Import megnet on current pymatgen and TensorFlow, or say clearly why it cannot be."""
    if "tensorflow" in sys.modules and "megnet" not in sys.modules:
        import tensorflow as tf

        if not tf.keras.__name__.startswith("tf_keras") and os.environ.get("TF_USE_LEGACY_KERAS") != "1":
            raise RuntimeError(
                "TensorFlow was imported with Keras 3 before megnet; megnet needs the legacy "
                "tf-keras. Set TF_USE_LEGACY_KERAS=1 before the first TensorFlow import (or "
                "import sklearn_atomsets' megnet backend first)."
            )
    if os.environ.setdefault("TF_USE_LEGACY_KERAS", "1") != "1":
        raise RuntimeError("megnet needs TF_USE_LEGACY_KERAS=1; it is set to something else.")
    from pymatgen.analysis import local_env

    for old, new in _PYMATGEN_RENAMES.items():
        if not hasattr(local_env, old) and hasattr(local_env, new):
            setattr(local_env, old, getattr(local_env, new))
    try:
        import megnet.models  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "The megnet reference backend needs the optional dependencies: "
            "pip install 'sklearn-atomsets[megnet]' (megnet, tensorflow-cpu, tf-keras). "
            f"Import failed with: {exc}"
        ) from exc
    import megnet

    return megnet


class MegnetReference:
    """megnet's own graph conversion and Keras model, returning the encoder's named outputs."""

    def __init__(self, parent, graph_model=None):
        import_megnet()
        from megnet.models import MEGNetModel
        from tensorflow.keras.models import Model

        self.parent = parent
        self.graph_model = graph_model or MEGNetModel.from_file(str(parent.path))
        keras_model = self.graph_model.model
        inputs = [t.name.split(":")[0] for t in keras_model.inputs]
        atom_input, atom_graph_input = inputs[0], inputs[5]
        names, tensors = [], []
        blocks = [layer for layer in keras_model.layers if type(layer).__name__ == "MEGNetLayer"]
        for k, layer in enumerate(blocks, start=1):
            for prefix, tensor in zip("VEu", layer.output):
                names.append(f"{prefix}{k}")
                tensors.append(tensor)
        for layer in keras_model.layers:
            kind = type(layer).__name__
            if kind == "Embedding" and layer.input.name.split(":")[0] == atom_input:
                names.append("V0")
                tensors.append(layer.output)
                self.max_atomic_number = layer.input_dim - 1
            elif kind == "Set2Set":
                index_name = layer.input[1].name.split(":")[0]
                names.append("set2set_atom" if index_name == atom_graph_input else "set2set_bond")
                tensors.append(layer.output)
            elif kind == "Concatenate":
                names.append("f")
                tensors.append(layer.output)
        names.append("output")
        tensors.append(keras_model.output)
        self.names = names
        self.model = Model(inputs=keras_model.inputs, outputs=tensors)

    def output_widths(self):
        return {name: int(t.shape[-1]) for name, t in zip(self.names, self.model.outputs)}

    def graphs(self, structures):
        """megnet's own graph dictionaries for the structures."""
        return [self.graph_model.graph_converter.convert(s) for s in structures]

    def run(self, graphs, structures, outputs=None, batch_size=None):
        """Outputs for structures, batched by megnet's own generator (our graphs unused)."""
        flat = self.graph_model.graph_converter.get_flat_data(self.graphs(structures))
        generator = self.graph_model._create_generator(
            *flat, batch_size=batch_size or len(structures), is_shuffle=False
        )
        collected = {name: [] for name in self.names}
        for inputs in generator:
            for name, value in zip(self.names, self.model.predict_on_batch(inputs)):
                collected[name].append(np.asarray(value)[0])
        wanted = self.names if outputs is None else outputs
        return {name: np.concatenate(collected[name]) for name in wanted}
