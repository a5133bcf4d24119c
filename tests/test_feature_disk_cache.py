"""Issue 34, item 4: a feature cache on disk shared by processes, and pickles that a first use
leaves unchanged (so Pipeline(memory=) hits)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest

import sklearn_atomsets._featurizers as featurizers_module
from sklearn_atomsets import (
    AtomicNumberSetFeaturizer,
    MEGNetCompositionFeaturizer,
    MEGNetElementSetFeaturizer,
    MEGNetEncoder,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
)

from .conftest import assert_float32_close

pytestmark = pytest.mark.usefixtures("one_torch_thread", "fresh_feature_cache")
REPO = Path(__file__).resolve().parents[1]

# One process: featurize the pymatgen crystals with the V1 site sets through the shared folder,
# count the structures that went through the encoder, and print the features' bytes' hash.
WORKER = r"""
import hashlib, json, sys
import torch
torch.set_num_threads(1)
from sklearn_atomsets import MEGNetEncoder, MEGNetSiteSetFeaturizer
from tests.conftest import PYMATGEN_STRUCTURES
from pymatgen.core import Structure
structures = [Structure.from_file(p) for p in sorted(PYMATGEN_STRUCTURES.glob("*.json"))]
structures = [s for s in structures if s.is_ordered and len(s) <= 12][:6]
encoded = []
original = MEGNetEncoder.encode
def counting(self, batch, *args, **kwargs):
    batch = list(batch)
    encoded.append(len(batch))
    return original(self, batch, *args, **kwargs)
MEGNetEncoder.encode = counting
rows = MEGNetSiteSetFeaturizer("V1", cache=sys.argv[1]).featurize_many(structures, pbar=False)
digest = hashlib.sha256(b"".join(r[0].features.tobytes() + r[0].weights.tobytes() for r in rows)).hexdigest()
print(json.dumps({"encoded": sum(encoded), "n": len(structures), "digest": digest}))
"""


def _start(folder):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", WORKER, str(folder)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _result(process):
    out, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return json.loads(out.strip().splitlines()[-1])


@pytest.mark.slow
def test_processes_sharing_the_folder_encode_each_structure_once(tmp_path):
    folder = tmp_path / "features"
    first = _result(_start(folder))
    assert first["encoded"] == first["n"] == 6
    assert len(list(folder.glob("*.npz"))) == 6 and not list(folder.glob("*.tmp"))
    # two more processes at once: neither encodes, both read the same bits
    later = [_result(p) for p in [_start(folder), _start(folder)]]
    assert [r["encoded"] for r in later] == [0, 0]
    assert {r["digest"] for r in later} == {first["digest"]}
    # concurrent writers on an empty folder: whole files only (atomic rename), same features
    fresh = tmp_path / "fresh"
    racing = [_result(p) for p in [_start(fresh), _start(fresh)]]
    assert {r["digest"] for r in racing} == {first["digest"]}
    assert len(list(fresh.glob("*.npz"))) == 6 and not list(fresh.glob("*.tmp"))
    assert _result(_start(fresh))["encoded"] == 0


def test_folder_cache_in_process_bounded_and_robust_to_a_broken_file(pymatgen_structures, tmp_path, monkeypatch):
    structures = [s for s in pymatgen_structures if len(s) <= 12][:6]
    folder = tmp_path / "cache"
    reference = MEGNetSiteSetFeaturizer("V1", cache=False).featurize_many(structures, pbar=False)
    rows = MEGNetSiteSetFeaturizer("V1", cache=str(folder)).featurize_many(structures, pbar=False)
    files = sorted(folder.glob("*.npz"))
    assert len(files) == 6
    featurizers_module.clear_feature_cache()  # only the folder is left
    calls = []
    original = MEGNetEncoder.encode
    monkeypatch.setattr(MEGNetEncoder, "encode", lambda self, b, *a, **k: calls.append(list(b)) or original(self, b, *a, **k))
    files[0].write_bytes(b"not an npz file")  # a broken file is a miss, not an error
    again = MEGNetSiteSetFeaturizer("V1", cache=folder).featurize_many(structures, pbar=False)
    assert [len(c) for c in calls] == [1]
    # the other five read back bit for bit; the broken one encoded again, alone in its batch
    # (float32 sums in another order: equal or not, depending on which structure's file the
    # content-keyed name put first); all equal to the uncached features up to that rounding
    [broken] = [k for k, s in enumerate(structures) if s == calls[0][0]]
    assert all(b[0] == c[0] for k, (b, c) in enumerate(zip(rows, again)) if k != broken)
    for a, b, c in zip(reference, rows, again):
        for s in (b[0], c[0]):
            assert_float32_close(s.features, a[0].features)
    # bounded: the oldest files go first
    sizes = sorted(f.stat().st_size for f in folder.glob("*.npz"))
    monkeypatch.setattr(featurizers_module, "DEFAULT_DISK_CACHE_BYTES", sum(sizes[-2:]))
    featurizers_module.clear_feature_cache()
    MEGNetSiteSetFeaturizer("V1", cache=folder).featurize_many([s.copy() for s in structures[:1]] +
                                                               [structures[0].copy().perturb(0.01)], pbar=False)
    assert sum(f.stat().st_size for f in folder.glob("*.npz")) <= sum(sizes[-2:])


def test_first_use_leaves_the_pickle_and_joblib_hash_unchanged(pymatgen_structures):
    structures = [s for s in pymatgen_structures if len(s) <= 12][:2]
    for featurizer, x in [(MEGNetStructureFeaturizer(), structures), (MEGNetSiteSetFeaturizer(), structures),
                          (MEGNetCompositionFeaturizer(), ["SiO2"]), (MEGNetElementSetFeaturizer(), ["SiO2"]),
                          (AtomicNumberSetFeaturizer(), ["SiO2"])]:
        before = joblib.hash(featurizer)
        featurizer.featurize_many(x, pbar=False)
        featurizer.feature_labels()
        assert joblib.hash(featurizer) == before, type(featurizer).__name__
