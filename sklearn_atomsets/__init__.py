"""sklearn-atomsets: the AtomSets framework (Chen & Ong, npj Comput. Mater. 7, 173 (2021)).

Data flows one way, one module per step::

    structure -> graph (_graph) -> frozen MEGNet encoder (_encoder) -> features
              -> AtomSets estimator -> benchmark

The parent model (a pretrained MEGNet, CHGNet or SevenNet) is found by ``load_parent``; each family of
parents lives in its own module of ``sklearn_atomsets.parents``, behind one interface.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]

from ._atomsets import AtomSetsModule
from ._calibration import calibrated_std, fit_std_calibration, interval_coverage
from ._baseline import MatminerFeatures, automatminer_style_pipeline, default_matminer_featurizers
from ._dask import featurize_dask, to_dask_frame
from ._encoder import EncoderOutput, MEGNetEncoder, MEGNetModule
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
    set_feature_cache_limit,
)
from ._matbench import MatbenchTask, load_matbench_task
from ._graph import CrystalGraphBatch, GraphConstructionError, build_graphs
from ._parents import PARENT_MODELS, ParentModel, ParentModelCorruptError, ParentModelNotFoundError
from .parents import load_parent, parent_family, registered_parents
from .parents.chgnet import CHGNET_PARENTS, CHGNetEncoder, CHGNetParent
from .parents.sevennet import SEVENNET_PARENTS, SevenNetEncoder, SevenNetParent
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
    "set_feature_cache_limit",
    "FailedSet",
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
    "load_matbench_task",
    "CrystalGraphBatch",
    "EncoderOutput",
    "GraphConstructionError",
    "MEGNetEncoder",
    "MEGNetModule",
    "ParentModel",
    "ParentModelCorruptError",
    "ParentModelNotFoundError",
    "build_graphs",
    "load_parent",
]
