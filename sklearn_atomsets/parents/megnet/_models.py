"""MEGNet parent models: find a pretrained megnet ``.hdf5`` and its graph converter.

A *parent* is the pretrained MEGNet whose frozen layers give the AtomSets features.
``load_parent`` resolves a name, a path or a live megnet ``GraphModel`` to a
:class:`ParentModel`, which only records where the weights are and how graphs are built;
the weights themselves are read by the encoder.

Resolution order for a registered name:

1. the model directory (``SKLEARN_ATOMSETS_MODEL_DIR``, default
   ``~/.cache/sklearn-atomsets/megnet_models``), laid out like megnet's ``mvl_models/``;
2. Python packages that ship the file (``maml`` ships ``Eform_MP_2019``);
3. megnet's official download (figshare archive of ``mvl_models``), with a timeout, a
   sha256 check, and an atomic move into the model directory.

Every file taken from a registered location is checked against its sha256.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .. import DEFAULT_PARENT
from .._base import ParentModelCorruptError, ParentModelNotFoundError, ParentRecord
from .._base import file_sha256 as _sha256

__all__ = [
    "PARENT_MODELS",
    "ParentModel",
    "ParentModelCorruptError",
    "ParentModelNotFoundError",
    "default_model_dir",
    "load_parent",
]

MODEL_DIR_ENV = "SKLEARN_ATOMSETS_MODEL_DIR"

# megnet's own source of its pretrained models (megnet.utils.models._download_models).
MEGNET_MODELS_URL = "https://ndownloader.figshare.com/files/22291785"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class _Registered:
    relpath: str  # inside megnet's mvl_models/
    sha256: str  # of the .hdf5
    json_sha256: str  # of the .hdf5.json converter file
    description: str
    # (package, path inside it) that ship a byte-identical copy
    shipped_by: tuple[tuple[str, str], ...] = ()


PARENT_MODELS: dict[str, _Registered] = {
    "Eform_MP_2019": _Registered(
        "mp-2019.4.1/formation_energy.hdf5",
        "51de7e372f9fdbd10a519c3fd3cbf6fcd1039cc58e092c85b0f4fef49964f57b",
        "8727d8d0ab2686c4ac1c06f9ed8bdba7e63abaeac1287cff2e3c7263bf0b4b5b",
        "formation energy, 133,420 Materials Project crystals (2019); the AtomSets parent",
        (("maml", "describers/data/megnet_models/formation_energy.hdf5"),),
    ),
    "Efermi_MP_2019": _Registered(
        "mp-2019.4.1/efermi.hdf5",
        "20c541f24acdc2de003a56fc6124c1725aa48358c5a3b1be64f358c0cc4c055a",
        "e19ab63af7963c69165774bfac18db52af446e4acd8ba90aa13e17ffb869362d",
        "Fermi energy, 66,680 Materials Project crystals (2019)",
    ),
    "logK_MP_2019": _Registered(
        "mp-2019.4.1/log10K.hdf5",
        "ac521bb2f6752e1a7c99df86059114b9b7920223f1db957c11749f34e8f9af4a",
        "b91c548a472a92a20e465e3821537222ed35b70868948e9bc5d43aa52ad5029f",
        "log10 bulk modulus K_VRH, 12,179 Materials Project crystals (2019)",
    ),
    "logG_MP_2019": _Registered(
        "mp-2019.4.1/log10G.hdf5",
        "2be27b3fbf59012bed6e6e595c772cf9b67db279cde1686c44987cd132c1b805",
        "bd847ef5124d8d0df856883a3fff045154d355cd875a1c3da7a4851d26be16f8",
        "log10 shear modulus G_VRH, 12,179 Materials Project crystals (2019)",
    ),
    "Eform_MP_2018": _Registered(
        "mp-2018.6.1/formation_energy.hdf5",
        "82363f6ef74747f67bccd75fa0237dfaab5f0da519bf5f9cf8f4bcc11c53712b",
        "46566670b0c5ab13ebe6497ea3383fe772e90fe62517282448387694896cabd0",
        "formation energy, 69,239 Materials Project crystals (2018)",
    ),
    "Bandgap_MP_2018": _Registered(
        "mp-2018.6.1/band_gap_regression.hdf5",
        "e149197440863b06e819c3cc11550f7c78eee329b916112dab84d884d21306de",
        "96285e10309b8bc4091ec5c45b784958b3626e3b0d70ace96493717341438be9",
        "band gap of the 45,901 gapped Materials Project crystals (2018)",
    ),
    "Bandgap_classifier_MP_2018": _Registered(
        "mp-2018.6.1/band_classification.hdf5",
        "51ce69de769f5f8164bfe316d027b18d9b04cec7c06f88d451956aa3319ed9e0",
        "e7532faf49026e7384c906c389b5e0f8ef9bf586504ef0ff65e3b42897b96190",
        "metal / non-metal classifier, 69,239 Materials Project crystals (2018)",
    ),
}


def _check_hdf5(path: Path):
    """Fail here, naming the file, when it is not a Keras/MEGNet ``.hdf5`` (text, truncated,
    corrupt), rather than at the first encode with an anonymous ``OSError``."""
    import h5py

    try:
        with h5py.File(path, "r") as fh:
            config = fh.attrs.get("model_config")
            if config is None:
                raise ValueError("it holds no Keras model config")
            json.loads(config.decode() if isinstance(config, bytes) else str(config))
            if "model_weights" not in fh and not any(isinstance(fh[k], h5py.Group) for k in fh):
                raise ValueError("it holds no weights")
    except (OSError, ValueError, KeyError) as exc:
        raise ValueError(
            f"{path} is not a valid MEGNet .hdf5 model file ({type(exc).__name__}: {exc}); "
            "is it truncated, corrupt or another kind of file?"
        ) from None


@dataclass(frozen=True, eq=False)
class ParentModel(ParentRecord):
    """Where a pretrained MEGNet lives and how it turns crystals into graphs.

    Parameters
    ----------
    name : str
        Registered name (``"Eform_MP_2019"``) or the file's stem for other files.
    path : Path
        The Keras ``.hdf5`` file holding the architecture and the weights.
    cutoff : float
        Neighbour cutoff radius in Angstrom of the crystal graph.
    centers : ndarray of shape (n_centers,)
        Centres of the Gaussian expansion of bond lengths.
    width : float
        Width of the Gaussian expansion.
    target_scaler : dict or None
        megnet's target scaler (``StandardScaler`` / ``DummyScaler``) serialised in the
        converter file; used to turn the parent's raw output into its prediction.
    metadata : dict
        Free-text metadata from the converter file (units, training set).
    sha256 : str or None
        Checksum of ``path`` when it was verified against the registry.
    """

    name: str
    path: Path
    cutoff: float
    centers: np.ndarray = field(repr=False)
    width: float
    target_scaler: dict | None = field(default=None, repr=False)
    metadata: dict = field(default_factory=dict, repr=False)
    sha256: str | None = None

    @classmethod
    def from_files(cls, path, name=None, sha256=None):
        """Read the converter settings from ``path + ".json"`` next to the ``.hdf5``."""
        # absolute: a relative path means the file in the working directory of *now*
        path = Path(path).expanduser().absolute()
        json_path = Path(str(path) + ".json")
        if not path.is_file():
            raise ParentModelNotFoundError(f"MEGNet model file {path} does not exist.")
        if not json_path.is_file():
            raise ParentModelNotFoundError(
                f"The graph-converter file {json_path} is missing: a megnet model comes as "
                f"'{path.name}' plus '{path.name}.json' (cutoff and Gaussian centres)."
            )
        try:
            with open(json_path) as fh:
                config = json.load(fh)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{json_path} is not a megnet converter file: invalid JSON ({exc}).") from None
        _check_hdf5(path)
        try:
            converter = config["graph_converter"]
            bond = converter["bond_converter"]
            centers = bond["centers"]
            centers = np.asarray(centers["data"] if isinstance(centers, dict) else centers, float)
            width = float(bond["width"])
            nn = converter.get("nn_strategy")
            cutoff = float(nn["cutoff"] if isinstance(nn, dict) else converter["cutoff"])
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"{json_path} is not a megnet CrystalGraph converter with a GaussianDistance "
                f"bond converter (missing {exc})."
            ) from None
        return cls(
            name=name or path.stem,
            path=path,
            cutoff=cutoff,
            centers=centers,
            width=width,
            target_scaler=config.get("target_scaler"),
            metadata=config.get("metadata", {}),
            sha256=sha256,
        )

    def inverse_transform_target(self, raw, n_atoms):
        """Turn the parent's raw network output into its prediction (megnet's scalers)."""
        raw = np.asarray(raw, dtype=float)
        scaler = self.target_scaler or {}
        if scaler.get("@class") != "StandardScaler":
            return raw
        value = raw * scaler["std"] + scaler["mean"]
        if not scaler.get("is_intensive", True):
            value = value * np.asarray(n_atoms, dtype=float).reshape(-1, *([1] * (raw.ndim - 1)))
        return value


def default_model_dir() -> Path:
    """The folder where parent models are looked for first and downloaded to."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "sklearn-atomsets" / "megnet_models"


def content_sha256(parent: ParentModel) -> str:
    """The checksum of a parent's weights file and of its ``.hdf5.json`` converter (cutoff,
    Gaussian centres) as they are now: what the feature cache is keyed by (never the path
    string, which may mean another file from another working directory). The converter
    changes the graphs, so the same weights with another converter are another key."""
    key = _sha256(parent.path)
    json_path = Path(str(parent.path) + ".json")
    if json_path.is_file():
        key = f"{key}+{_sha256(json_path)}"
    return key


def _verified(path: Path, entry: _Registered) -> bool:
    json_path = Path(str(path) + ".json")
    return (
        path.is_file()
        and json_path.is_file()
        and _sha256(path) == entry.sha256
        and _sha256(json_path) == entry.json_sha256
    )


def _shipped_copies(entry: _Registered):
    for package, relpath in entry.shipped_by:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            continue
        for root in spec.submodule_search_locations:
            yield Path(root) / relpath


# Not pooch: pooch checks the hash of the downloaded file, and megnet publishes no hash of
# its archive, only the models inside it are registered (with their sha256); what pooch
# would take over is the urlopen-with-timeout below, at the cost of a dependency, while the
# member checks and the atomic two-file move (.json last) would stay ours.
def _download(entry: _Registered, model_dir: Path, url: str, timeout: float) -> Path:
    """Fetch megnet's model archive, check the member's sha256, move it in atomically."""
    model_dir.mkdir(parents=True, exist_ok=True)
    target = model_dir / entry.relpath
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=model_dir, prefix=".download-") as tmp:
        archive = Path(tmp) / "mvl_models.zip"
        with urllib.request.urlopen(url, timeout=timeout) as response, open(archive, "wb") as fh:
            shutil.copyfileobj(response, fh)
        with zipfile.ZipFile(archive) as zf:
            members = {Path(n).as_posix(): n for n in zf.namelist()}
            staged = []
            for rel, expected in ((entry.relpath, entry.sha256), (entry.relpath + ".json", entry.json_sha256)):
                member = next((n for p, n in members.items() if p.endswith("mvl_models/" + rel) or p == rel), None)
                if member is None:
                    raise ParentModelNotFoundError(f"{url} does not contain mvl_models/{rel}.")
                out = Path(tmp) / Path(rel).name
                with zf.open(member) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                if _sha256(out) != expected:
                    raise ParentModelNotFoundError(
                        f"Checksum mismatch for mvl_models/{rel} downloaded from {url}; nothing was "
                        "written to the model directory."
                    )
                staged.append((out, target.parent / Path(rel).name))
        # The .json goes in last: a model counts as present only when both files are.
        for src, dst in staged:
            os.replace(src, dst)
    return target


def _resolve_registered(name: str, download: bool, url: str | None, timeout: float) -> ParentModel:
    entry = PARENT_MODELS[name]
    looked, corrupt = [], []
    model_dir = default_model_dir()
    candidates = [model_dir / entry.relpath, *_shipped_copies(entry)]
    for path in candidates:
        looked.append(str(path))
        if _verified(path, entry):
            return ParentModel.from_files(path, name=name, sha256=entry.sha256)
        for file, expected in ((path, entry.sha256), (Path(str(path) + ".json"), entry.json_sha256)):
            if file.is_file() and _sha256(file) != expected:
                corrupt.append(f"{file} is corrupt: its sha256 is {_sha256(file)}, the registry's is {expected}")
                looked[-1] += " (corrupt: checksum mismatch)"
    url = url or MEGNET_MODELS_URL
    if download:
        try:
            path = _download(entry, model_dir, url, timeout)
        except (OSError, zipfile.BadZipFile) as exc:
            looked.append(f"{url} (download failed: {exc})")
        else:
            return ParentModel.from_files(path, name=name, sha256=entry.sha256)
    else:
        looked.append(f"{url} (download=False)")
    where = "\n  ".join(looked)
    if corrupt:
        raise ParentModelCorruptError(
            f"Parent model {name!r} ({entry.relpath}): " + "; ".join(corrupt) + ". Delete the corrupt "
            f"file and copy megnet's original again (or let load_parent download it). Looked in:\n  {where}"
        )
    raise ParentModelNotFoundError(
        f"Parent model {name!r} ({entry.relpath}) was not found. Looked in:\n  {where}\n"
        f"To work offline, copy megnet's '{entry.relpath}' and its '.json' file into "
        f"{model_dir / Path(entry.relpath).parent} (or set {MODEL_DIR_ENV} to a folder laid out "
        "like megnet's mvl_models/), or pass the path of the .hdf5 file to load_parent."
    )


def _from_graph_model(model) -> ParentModel:
    """Save a live megnet GraphModel once (content-addressed) and read it like a file."""
    return _graph_model_to_files(model, default_model_dir() / "from_graph_model")


def _graph_model_to_files(model, directory) -> ParentModel:
    """Save a live megnet GraphModel as ``.hdf5`` + ``.json``, named by its weights' hash, and
    read it back like any parent file (megnet itself is not imported: the model is live)."""
    digest = hashlib.sha256()
    for weight in model.model.get_weights():
        digest.update(np.ascontiguousarray(weight).tobytes())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"megnet-{digest.hexdigest()[:16]}.hdf5"
    if not (target.is_file() and Path(str(target) + ".json").is_file()):
        with tempfile.TemporaryDirectory(dir=directory, prefix=".save-") as tmp:
            staged = Path(tmp) / target.name
            model.save_model(str(staged))
            os.replace(staged, target)
            os.replace(str(staged) + ".json", str(target) + ".json")
    return ParentModel.from_files(target, name=target.stem)


def load_parent(parent=DEFAULT_PARENT, *, download=True, url=None, timeout=DOWNLOAD_TIMEOUT_S):
    """Find a pretrained MEGNet parent model.

    Parameters
    ----------
    parent : str, path-like, ParentModel or megnet GraphModel, default="Eform_MP_2019"
        A registered name (see ``PARENT_MODELS``: ``"Eform_MP_2019"``, ``"Eform_MP_2018"``,
        ``"Efermi_MP_2019"``, ``"logK_MP_2019"``, ``"logG_MP_2019"``, ``"Bandgap_MP_2018"``,
        ``"Bandgap_classifier_MP_2018"``), the path of any megnet ``.hdf5`` file with its
        ``.hdf5.json`` converter next to it, or a live megnet ``GraphModel``.
    download : bool, default=True
        Whether a registered model that is not on disk may be downloaded.
    url : str, optional
        Where megnet's model archive is downloaded from (default: megnet's own figshare file).
    timeout : float, default=60
        Seconds before the download gives up.

    Returns
    -------
    ParentModel

    Raises
    ------
    ParentModelNotFoundError
        Saying every place that was looked in and how to provide the file.

    Examples
    --------
    >>> from sklearn_atomsets import load_parent
    >>> parent = load_parent("Eform_MP_2019")
    >>> parent.cutoff, len(parent.centers), parent.width
    (5.0, 100, 0.5)
    """
    if isinstance(parent, ParentModel):
        return parent
    if isinstance(parent, (str, os.PathLike)):
        if isinstance(parent, str) and parent in PARENT_MODELS:
            return _resolve_registered(parent, download, url, timeout)
        path = Path(parent).expanduser()
        if path.suffix == ".hdf5" or path.exists():
            return ParentModel.from_files(path)
        raise ValueError(
            f"parent={parent!r} is neither a registered parent model {sorted(PARENT_MODELS)} "
            "nor the path of a megnet .hdf5 file."
        )
    if type(parent).__module__.startswith("megnet.") or hasattr(parent, "graph_converter"):
        return _from_graph_model(parent)
    raise TypeError(
        f"parent must be a registered name, a path to a megnet .hdf5 file, a ParentModel or a "
        f"megnet GraphModel; got {type(parent).__name__}."
    )
