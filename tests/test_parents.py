"""Finding parent models: registry names, files, the cache, download and its failures."""

from __future__ import annotations

import shutil
import zipfile

import numpy as np
import pytest

from sklearn_atomsets import PARENT_MODELS, ParentModelNotFoundError, load_parent
from sklearn_atomsets.parents._base import file_sha256 as _sha256

from .conftest import SHARED_MODELS, assert_float32_close, needs_shared_models

EFORM_2019_SHA = "51de7e372f9fdbd10a519c3fd3cbf6fcd1039cc58e092c85b0f4fef49964f57b"


@pytest.fixture
def empty_model_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("SKLEARN_ATOMSETS_MODEL_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


def test_default_parent_is_found_offline_in_an_installed_package(empty_model_dir):
    parent = load_parent(download=False)
    assert parent.name == "Eform_MP_2019"
    assert parent.sha256 == EFORM_2019_SHA == _sha256(parent.path)
    assert "site-packages" in str(parent.path) or "maml" in str(parent.path)
    assert (parent.cutoff, parent.width) == (5.0, 0.5)
    assert_float32_close(parent.centers, np.linspace(0, 6, 100))


@needs_shared_models
@pytest.mark.parametrize("name", sorted(PARENT_MODELS))
def test_every_registered_name_resolves_from_the_model_dir(name, shared_model_dir):
    parent = load_parent(name, download=False)
    assert parent.path.is_relative_to(SHARED_MODELS)
    assert _sha256(parent.path) == PARENT_MODELS[name].sha256


@needs_shared_models
def test_2018_and_elasticity_parents_use_their_own_converter(shared_model_dir):
    assert load_parent("Eform_MP_2018").cutoff == 4.0
    k = load_parent("logK_MP_2019")
    assert k.cutoff == 4.0 and k.centers.max() == 5.0
    assert k.metadata["unit"] == "log10(GPa)"


def test_missing_offline_model_says_where_it_looked_and_what_to_do(empty_model_dir):
    with pytest.raises(ParentModelNotFoundError) as info:
        load_parent("logK_MP_2019", download=False)
    message = str(info.value)
    assert str(empty_model_dir / "mp-2019.4.1" / "log10K.hdf5") in message
    assert "SKLEARN_ATOMSETS_MODEL_DIR" in message and "download=False" in message


def test_unreachable_download_fails_cleanly(empty_model_dir, tmp_path):
    with pytest.raises(ParentModelNotFoundError, match="download failed"):
        load_parent("logK_MP_2019", url=(tmp_path / "nowhere.zip").as_uri(), timeout=5)
    assert not list(empty_model_dir.rglob("*.hdf5*"))


def _archive(tmp_path, corrupt=False):
    """A zip laid out like megnet's figshare archive of mvl_models/."""
    archive = tmp_path / "mvl_models.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for name in ("log10K.hdf5", "log10K.hdf5.json"):
            data = (SHARED_MODELS / "mp-2019.4.1" / name).read_bytes()
            if corrupt and name.endswith(".hdf5"):
                data = data[:-10] + b"0123456789"
            zf.writestr(f"mvl_models/mp-2019.4.1/{name}", data)
    return archive.as_uri()


@needs_shared_models
def test_download_checks_the_sha256_and_lands_in_the_model_dir(empty_model_dir, tmp_path):
    parent = load_parent("logK_MP_2019", url=_archive(tmp_path))
    assert parent.path == empty_model_dir / "mp-2019.4.1" / "log10K.hdf5"
    assert _sha256(parent.path) == PARENT_MODELS["logK_MP_2019"].sha256
    assert sorted(p.name for p in empty_model_dir.rglob("*") if p.is_file()) == ["log10K.hdf5", "log10K.hdf5.json"]
    # found in the cache the next time, with no download
    assert load_parent("logK_MP_2019", download=False).path == parent.path


@needs_shared_models
def test_corrupt_download_leaves_nothing_behind(empty_model_dir, tmp_path):
    with pytest.raises(ParentModelNotFoundError, match="Checksum mismatch"):
        load_parent("logK_MP_2019", url=_archive(tmp_path, corrupt=True))
    assert not [p for p in empty_model_dir.rglob("*") if p.is_file()]


@needs_shared_models
def test_corrupt_cached_file_is_not_used(empty_model_dir, tmp_path):
    target = empty_model_dir / "mp-2019.4.1"
    target.mkdir(parents=True)
    shutil.copy(SHARED_MODELS / "mp-2019.4.1" / "log10K.hdf5.json", target)
    (target / "log10K.hdf5").write_bytes(b"truncated")
    with pytest.raises(ParentModelNotFoundError):
        load_parent("logK_MP_2019", download=False)
    repaired = load_parent("logK_MP_2019", url=_archive(tmp_path))
    assert _sha256(repaired.path) == PARENT_MODELS["logK_MP_2019"].sha256


@needs_shared_models
def test_explicit_path_and_its_converter_file(tmp_path):
    parent = load_parent(SHARED_MODELS / "mp-2018.6.1" / "band_gap_regression.hdf5")
    assert parent.name == "band_gap_regression" and parent.cutoff == 4.0
    lonely = tmp_path / "model.hdf5"
    shutil.copy(parent.path, lonely)
    with pytest.raises(ParentModelNotFoundError, match=r"model\.hdf5\.json"):
        load_parent(lonely)


def test_bad_parent_arguments_are_named(empty_model_dir):
    with pytest.raises(ValueError, match="neither a registered parent"):
        load_parent("Eform_MP_2077")
    with pytest.raises(TypeError, match="parent must be"):
        load_parent(42)
    with pytest.raises(ParentModelNotFoundError, match="does not exist"):
        load_parent("/no/such/model.hdf5")


@needs_shared_models
def test_fermi_parent_prediction_undoes_megnets_standard_scaler(shared_model_dir):
    parent = load_parent("Efermi_MP_2019")
    scaler = parent.target_scaler
    assert scaler["@class"] == "StandardScaler"
    assert_float32_close(parent.inverse_transform_target([[1.0]], [4]), [[scaler["std"] + scaler["mean"]]])
