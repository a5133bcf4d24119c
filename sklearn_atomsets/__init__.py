"""sklearn-atomsets: the AtomSets framework (Chen & Ong, npj Comput. Mater. 7, 173 (2021)).

Data flows one way, one module per step::

    structure -> graph + frozen parent encoder (parents/) -> features (_featurizers, _sets)
              -> AtomSets estimator (_estimators, _ensemble) -> benchmark (matbench/)

The parent model (a pretrained MEGNet, CHGNet or SevenNet) is found by ``load_parent``; each
family of parents lives in its own module or subpackage of ``sklearn_atomsets.parents``
(``parents/megnet/``, ``parents/chgnet.py``, ``parents/sevennet.py``), behind one interface
and one shared encode loop (``parents/_base.py``).
"""

import sys

__version__ = "0.1.0"

__all__ = ["__version__"]

from ._atomsets import AtomSetsModule
from ._calibration import calibrated_std, fit_std_calibration, interval_coverage, interval_quantile
from ._baseline import MatminerFeatures, automatminer_style_pipeline, default_matminer_featurizers
from ._dask import featurize_dask, to_dask_frame
from ._ensemble import AtomSetsEnsembleClassifier, AtomSetsEnsembleRegressor
from ._estimators import AtomSetsClassifier, AtomSetsRegressor, MLPfClassifier, MLPfRegressor
from ._featurizers import (
    AtomicNumberSetFeaturizer,
    CompositionFeaturizer,
    ElementSetFeaturizer,
    SiteSetFeaturizer,
    StructureFeaturizer,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    clear_feature_cache,
    precompute_features,
    set_feature_cache_limit,
)
from .matbench.tasks import MatbenchTask, load_matbench_task
from ._descriptors import SetsAndDescriptors
from ._preset import DescriptorPreset, descriptor_preset
from .parents import EncoderOutput, GraphConstructionError, RowError, load_parent, parent_family, registered_parents
from .parents._base import ParentModelCorruptError, ParentModelNotFoundError
from .parents.megnet import PARENT_MODELS, CrystalGraphBatch, MEGNetEncoder, MEGNetModule, ParentModel, build_graphs
from .parents.chgnet import CHGNET_PARENTS, CHGNetEncoder, CHGNetParent
from .parents.sevennet import SEVENNET_PARENTS, SevenNetEncoder, SevenNetParent
from ._selection import MutualInfoSelector
from ._sets import FailedSet, WeightedSet, as_sets, sets_from_list_columns, sets_to_list_columns

__all__ += [
    "PARENT_MODELS",
    "CHGNET_PARENTS",
    "CHGNetEncoder",
    "CHGNetParent",
    "SEVENNET_PARENTS",
    "SevenNetEncoder",
    "SevenNetParent",
    "parent_family",
    "registered_parents",
    "AtomSetsClassifier",
    "AtomSetsEnsembleClassifier",
    "AtomSetsEnsembleRegressor",
    "AtomSetsModule",
    "AtomSetsRegressor",
    "calibrated_std",
    "fit_std_calibration",
    "interval_coverage",
    "interval_quantile",
    "MLPfClassifier",
    "MLPfRegressor",
    "AtomicNumberSetFeaturizer",
    "StructureFeaturizer",
    "SiteSetFeaturizer",
    "CompositionFeaturizer",
    "ElementSetFeaturizer",
    "MEGNetCompositionFeaturizer",
    "MEGNetElementSetFeaturizer",
    "MEGNetSiteSetFeaturizer",
    "MEGNetStructureFeaturizer",
    "clear_feature_cache",
    "precompute_features",
    "set_feature_cache_limit",
    "FailedSet",
    "MutualInfoSelector",
    "featurize_dask",
    "to_dask_frame",
    "WeightedSet",
    "as_sets",
    "sets_from_list_columns",
    "sets_to_list_columns",
    "MatbenchTask",
    "MatminerFeatures",
    "automatminer_style_pipeline",
    "default_matminer_featurizers",
    "DescriptorPreset",
    "SetsAndDescriptors",
    "descriptor_preset",
    "load_matbench_task",
    "CrystalGraphBatch",
    "EncoderOutput",
    "GraphConstructionError",
    "RowError",
    "MEGNetEncoder",
    "MEGNetModule",
    "ParentModel",
    "ParentModelCorruptError",
    "ParentModelNotFoundError",
    "build_graphs",
    "load_parent",
]

# Old homes of the MEGNet family's classes, before it moved into parents/megnet/: pickles
# written by earlier versions name them (sklearn_atomsets._parents.ParentModel,
# sklearn_atomsets._encoder.MEGNetEncoder), so those names stay importable
# (tests/test_old_pickles.py loads such a pickle).
from .parents.megnet import _encoder as _megnet_encoder, _models as _megnet_models  # noqa: E402

sys.modules.setdefault(f"{__name__}._parents", _megnet_models)
sys.modules.setdefault(f"{__name__}._encoder", _megnet_encoder)
