"""Shared fixtures: real structures, the ../shared folder, the megnet reference."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SHARED_MODELS = SHARED / "models" / "megnet"
SHARED_MATBENCH = SHARED / "data" / "matbench"
PYMATGEN_STRUCTURES = Path(importlib.util.find_spec("pymatgen").submodule_search_locations[0]) / "util" / "structures"

needs_shared_models = pytest.mark.skipif(
    not SHARED_MODELS.is_dir(), reason=f"pretrained megnet models not found at {SHARED_MODELS}"
)
needs_matbench = pytest.mark.skipif(
    not (SHARED_MATBENCH / "matbench_dielectric.json.gz").is_file(),
    reason=f"MatBench data not found at {SHARED_MATBENCH}",
)


def _megnet_importable():
    try:
        from sklearn_atomsets._megnet_backend import import_megnet

        import_megnet()
    except ImportError as exc:
        return str(exc)
    return None


@pytest.fixture(scope="session")
def megnet_reference():
    """Skip (saying why) when the optional megnet/TensorFlow backend is not installed."""
    problem = _megnet_importable()
    if problem:
        pytest.skip(f"megnet reference backend unavailable: {problem}")
    return True


@pytest.fixture
def shared_model_dir(monkeypatch):
    if not SHARED_MODELS.is_dir():
        pytest.skip(f"pretrained megnet models not found at {SHARED_MODELS}")
    monkeypatch.setenv("SKLEARN_ATOMSETS_MODEL_DIR", str(SHARED_MODELS))
    return SHARED_MODELS


@pytest.fixture(scope="session")
def pymatgen_structures():
    """The crystals pymatgen ships (util/structures/*.json), ordered ones only."""
    from pymatgen.core import Structure

    structures = [Structure.from_file(p) for p in sorted(PYMATGEN_STRUCTURES.glob("*.json"))]
    ordered = [s for s in structures if s.is_ordered]
    assert len(ordered) >= 15
    return ordered


@pytest.fixture(scope="session")
def dielectric_structures():
    """The first 200 structures of MatBench dielectric (official row order)."""
    if not (SHARED_MATBENCH / "matbench_dielectric.json.gz").is_file():
        pytest.skip(f"MatBench dielectric not found at {SHARED_MATBENCH}")
    from matminer.datasets import load_dataset

    df = load_dataset("matbench_dielectric", data_home=str(SHARED_MATBENCH))
    return list(df["structure"].iloc[:200])


@pytest.fixture
def fresh_feature_cache():
    """An empty process-wide feature cache before and after the test (no cached results leak
    between tests). Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    from sklearn_atomsets import clear_feature_cache

    clear_feature_cache()
    yield
    clear_feature_cache()


@pytest.fixture(scope="module")
def one_torch_thread():
    """One torch thread for the module's tests: test machines have few, shared cores, where
    torch's spinning thread pool is slow (tests of the threads the library chooses itself
    set their own)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

