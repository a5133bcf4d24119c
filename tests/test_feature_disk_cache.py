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
# count the structures that went through the encoder, and print the features' bytes' hash (and
# the features). With a barrier folder: load the parent first, then wait there for the other
# process, so that both look the folder up at the same moment, and make each forward pass last
# a second, longer than the other's look-up (without the folder's locks both encode everything).
WORKER = r"""
import hashlib, json, os, sys, time
import torch
torch.set_num_threads(1)
from sklearn_atomsets import MEGNetEncoder, MEGNetSiteSetFeaturizer
from tests.conftest import PYMATGEN_STRUCTURES
from pymatgen.core import Structure
structures = [Structure.from_file(p) for p in sorted(PYMATGEN_STRUCTURES.glob("*.json"))]
structures = [s for s in structures if s.is_ordered and len(s) <= 12][:6]
barrier = sys.argv[2] if len(sys.argv) > 2 else None
if barrier:
    MEGNetSiteSetFeaturizer("V1", cache=False).featurize_many(structures[:1], pbar=False)
    open(os.path.join(barrier, str(os.getpid())), "w").close()
    deadline = time.monotonic() + 120
    while len(os.listdir(barrier)) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
encoded = []
original = MEGNetEncoder.encode
def counting(self, batch, *args, **kwargs):
    batch = list(batch)
    encoded.append(len(batch))
    if barrier:
        time.sleep(1.0)
    return original(self, batch, *args, **kwargs)
MEGNetEncoder.encode = counting
rows = MEGNetSiteSetFeaturizer("V1", cache=sys.argv[1]).featurize_many(structures, pbar=False)
digest = hashlib.sha256(b"".join(r[0].features.tobytes() + r[0].weights.tobytes() for r in rows)).hexdigest()
print(json.dumps({"encoded": sum(encoded), "n": len(structures), "digest": digest,
                  "features": [r[0].features.tolist() for r in rows]}))
"""


def _start(folder, barrier=None):
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    args = [str(folder)] + ([] if barrier is None else [str(barrier)])
    return subprocess.Popen([sys.executable, "-c", WORKER, *args], cwd=REPO, env=env,
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


@pytest.mark.slow
def test_two_processes_starting_together_on_an_empty_folder_encode_each_structure_once(tmp_path):
    fresh, barrier = tmp_path / "fresh", tmp_path / "barrier"
    barrier.mkdir()
    racing = [_result(p) for p in [_start(fresh, barrier), _start(fresh, barrier)]]
    # the folder's locks: one process encodes a structure while the other waits, then reads it
    assert sum(r["encoded"] for r in racing) == racing[0]["n"] == 6
    assert racing[0]["digest"] == racing[1]["digest"]  # the same bits: one encoding of each
    assert len(list(fresh.glob("*.npz"))) == 6 and not list(fresh.glob("*.tmp"))
    alone = _result(_start(tmp_path / "alone"))
    for a, b in zip(racing[0]["features"], alone["features"]):  # batch neighbours: float32 rounding
        assert_float32_close(np.array(a), np.array(b))
    assert _result(_start(fresh))["encoded"] == 0


@pytest.mark.slow
def test_a_process_killed_while_encoding_leaves_no_lock_that_blocks(tmp_path):
    import signal
    import time

    folder, barrier = tmp_path / "features", tmp_path / "barrier"
    barrier.mkdir()
    (barrier / "no one").touch()  # no one to wait for: straight to the (slow) encoding
    victim = _start(folder, barrier)
    deadline = time.monotonic() + 240
    while not list(folder.glob("locks/*.lock")) and victim.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    victim.send_signal(signal.SIGKILL)  # holding its buckets' locks, inside its forward pass
    victim.communicate(timeout=60)
    assert list(folder.glob("locks/*.lock")) and not list(folder.glob("*.npz"))
    # the system released the dead process's flocks: the files left behind block no one
    assert _result(_start(folder))["encoded"] == 6


def test_an_unwritable_folder_still_featurizes_with_one_warning(pymatgen_structures, tmp_path):
    structures = [s for s in pymatgen_structures if len(s) <= 12][:3]
    (tmp_path / "a file").write_text("")
    folder = tmp_path / "a file" / "cache"  # neither the files nor the locks can be made
    reference = MEGNetSiteSetFeaturizer("V1", cache=False).featurize_many(structures, pbar=False)
    with pytest.warns(RuntimeWarning, match="Could not write the feature cache") as caught:
        rows = MEGNetSiteSetFeaturizer("V1", cache=folder).featurize_many(structures, pbar=False)
    assert len(caught) == 1
    for a, b in zip(reference, rows):
        assert_float32_close(b[0].features, a[0].features)


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
    assert list(folder.glob("locks/*.lock"))  # kept apart from the cached files, not evicted


def test_first_use_leaves_the_pickle_and_joblib_hash_unchanged(pymatgen_structures):
    structures = [s for s in pymatgen_structures if len(s) <= 12][:2]
    for featurizer, x in [(MEGNetStructureFeaturizer(), structures), (MEGNetSiteSetFeaturizer(), structures),
                          (MEGNetCompositionFeaturizer(), ["SiO2"]), (MEGNetElementSetFeaturizer(), ["SiO2"]),
                          (AtomicNumberSetFeaturizer(), ["SiO2"])]:
        before = joblib.hash(featurizer)
        featurizer.featurize_many(x, pbar=False)
        featurizer.feature_labels()
        assert joblib.hash(featurizer) == before, type(featurizer).__name__
