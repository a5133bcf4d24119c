"""Parallel without surprises: matminer's worker pools never hang, Dask scales out, devices.

The matminer-pool tests run in a subprocess with a timeout, so a deadlock fails the test
instead of hanging CI.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.base import clone

from sklearn_atomsets import (
    AtomSetsClassifier,
    AtomSetsRegressor,
    MEGNetEncoder,
    MEGNetModule,
    MEGNetSiteSetFeaturizer,
    MEGNetStructureFeaturizer,
    WeightedSet,
    clear_feature_cache,
)

from .conftest import REPO, assert_float32_close, scale_of_outputs


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- naming features needs no forward pass ------------------------------------------------
def test_feature_labels_run_no_forward_pass(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("forward pass while naming features")

    f = MEGNetStructureFeaturizer(layers=("f", "V1", "set2set_bond"), device="meta")
    monkeypatch.setattr(MEGNetModule, "forward", refuse)
    labels = f.feature_labels()
    assert len(labels) == 96 + 4 * 32 + 32 and labels[96] == "MEGNet V1 mean 0"


def test_output_widths_equal_a_real_forward_pass():
    module = MEGNetEncoder().module_
    one = torch.zeros(1, dtype=torch.long)
    bond = torch.zeros((1, module.input_shapes["bond"][-1]))
    out = module(one + 1, bond, torch.zeros((1, module.input_shapes["state"][-1])), one, one, one, one, 1)
    assert module.output_widths() == {name: t.shape[-1] for name, t in out.items()}


def test_clones_share_one_loaded_parent():
    f = MEGNetSiteSetFeaturizer()
    assert clone(f)._encoder() is f._encoder()
    assert MEGNetSiteSetFeaturizer(device=torch.device("cpu"))._encoder() is f._encoder()
    assert MEGNetSiteSetFeaturizer(batch_size=8)._encoder() is not f._encoder()


# -- threads ------------------------------------------------------------------------------
# Run in a fresh interpreter: in a test worker, threads that earlier tests left behind (Dask's,
# a progress bar's monitor) may be busy during the measurement and be counted (seen once in CI).
_BUSY_THREADS = """
import os, torch
from threadpoolctl import threadpool_limits

def busy_threads(work):
    # threads of this process that used >= 50 ms of CPU during work()
    def times():
        out = {}
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[tid] = int(fields[11]) + int(fields[12])
        return out

    before = times()
    work()
    return sum(1 for tid, ticks in times().items() if ticks - before.get(tid, 0) >= 5)

x = torch.randn(800, 800)
work = lambda: [x @ x for _ in range(25)]
torch.set_num_threads(2)
# read once outside the limits, as any earlier use of torch in a process does: a first read inside
# them would report torch's own count (2), later ones the limit's (measured in fresh interpreters)
assert torch.get_num_threads() == 2
with threadpool_limits(limits=1):
    print(torch.get_num_threads(), busy_threads(work))
torch.set_num_threads(1)
print(busy_threads(work))
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task") or (os.cpu_count() or 1) < 2, reason="Linux, >= 2 CPUs")
def test_threadpoolctl_does_not_limit_torch():
    # Why _threads.py sets torch's own thread count: inside threadpool_limits(1) torch
    # reports 1 thread, yet its kernels still run on the pool it was given before.
    out = subprocess.run([sys.executable, "-c", _BUSY_THREADS], capture_output=True, text=True, check=True,
                         timeout=300).stdout.split()
    # (reported, busy) inside threadpool_limits(1) with torch at 2 threads; then busy with torch at 1 thread
    assert out == ["1", "2", "1"]


def test_torch_threads_default_is_one_and_ignores_joblib_backends():
    from joblib import parallel_backend

    from sklearn_atomsets._threads import resolve_torch_threads, torch_threads

    assert resolve_torch_threads(None) == 1 and resolve_torch_threads(-1) == os.cpu_count()
    with pytest.raises(ValueError, match="torch threads"):
        resolve_torch_threads(0)
    torch.set_num_threads(2)
    try:
        with parallel_backend("threading", n_jobs=2), torch_threads(None):
            assert torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(1)


# -- matminer's own worker pools, every start method --------------------------------------
_POOL_SCRIPT = textwrap.dedent(
    """
    import multiprocessing, pickle, sys, time, warnings
    # (iterate_over_entries, n_jobs): every case with fork, the default path with the slower
    # start methods (matminer's Pool starts a fresh process per task: imports torch each time)
    CASES = {"fork": [(True, 1), (True, 2), (False, 1), (False, 2)], "spawn": [(True, 2)], "forkserver": [(True, 2)]}
    if __name__ == "__main__":
        multiprocessing.set_start_method(sys.argv[1], force=True)
        from matminer.featurizers.base import MultipleFeaturizer
        from matminer.featurizers.structure import DensityFeatures
        from sklearn_atomsets import MEGNetStructureFeaturizer
        with open(sys.argv[2], "rb") as f:
            frame, bad_frame = pickle.load(f)
        # the parent process encodes first with 2 torch threads: its OpenMP pool is started
        # before matminer forks, the case that used to hang
        MEGNetStructureFeaturizer(torch_threads=2, cache=False).featurize_many(frame["structure"][:8], pbar=False)
        out = {}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for iterate, n_jobs in CASES[sys.argv[1]]:
                mf = MultipleFeaturizer([DensityFeatures(), MEGNetStructureFeaturizer()], iterate_over_entries=iterate)
                mf.set_n_jobs(n_jobs)  # matminer's default is the CPU count: 2 on CI
                t = time.perf_counter()
                out[(iterate, n_jobs)] = mf.featurize_dataframe(frame, "structure", pbar=False)
                print(iterate, n_jobs, f"{time.perf_counter() - t:.1f} s", flush=True)
            # our own pool: 2 worker processes, one bad row
            own = MEGNetStructureFeaturizer(n_jobs=2, layers=("f", "V1"), cache=False)
            out["own"] = own.featurize_dataframe(bad_frame, "structure", ignore_errors=True,
                                                 return_errors=True, pbar=False)
        out["warnings"] = sorted({str(w.message)[:80] for w in caught})
        with open(sys.argv[3], "wb") as f:
            pickle.dump(out, f)
    """
)


@pytest.fixture(scope="module")
def pool_frames(dielectric_structures):
    frame = pd.DataFrame({"structure": dielectric_structures[:40]})
    bad = list(dielectric_structures[:130])
    bad[70] = "not a structure"
    return frame, pd.DataFrame({"structure": bad})


@pytest.mark.parametrize(
    "method",
    ["fork", pytest.param("spawn", marks=pytest.mark.slow), pytest.param("forkserver", marks=pytest.mark.slow)],
)
def test_matminer_pools_never_hang_and_agree_with_in_process(method, pool_frames, tmp_path):
    if method not in __import__("multiprocessing").get_all_start_methods():
        pytest.skip(f"start method {method} unavailable here")
    frame, bad_frame = pool_frames
    limit = 240 if method == "fork" else 480  # a spawned process imports torch: ~20 s on a busy 2-core CI
    (tmp_path / "run.py").write_text(_POOL_SCRIPT)
    with open(tmp_path / "in.pkl", "wb") as f:
        pickle.dump((frame, bad_frame), f)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    try:
        subprocess.run([sys.executable, str(tmp_path / "run.py"), method, str(tmp_path / "in.pkl"),
                        str(tmp_path / "out.pkl")], env=env, check=True, timeout=limit, capture_output=True)
    except subprocess.TimeoutExpired:
        pytest.fail(f"matminer's worker pool ({method}) did not finish in {limit} s: deadlock")
    with open(tmp_path / "out.pkl", "rb") as f:
        out = pickle.load(f)

    from matminer.featurizers.base import MultipleFeaturizer
    from matminer.featurizers.structure import DensityFeatures

    mf = MultipleFeaturizer([DensityFeatures(), MEGNetStructureFeaturizer()], iterate_over_entries=False)
    mf.set_n_jobs(1)
    expected = mf.featurize_dataframe(frame, "structure", pbar=False).drop(columns="structure")
    for key, got in out.items():
        if key in ("own", "warnings"):
            continue
        got = got.drop(columns="structure")
        assert list(got.columns) == list(expected.columns), key
        assert_float32_close(got.to_numpy(float), expected.to_numpy(float),
                             scale=scale_of_outputs(expected.columns, expected.to_numpy(float)), err_msg=str(key))

    own = out["own"]
    here = MEGNetStructureFeaturizer(layers=("f", "V1"), cache=False).featurize_dataframe(
        bad_frame, "structure", ignore_errors=True, return_errors=True, pbar=False)
    errors = own.pop("MEGNetStructureFeaturizer Exceptions")
    assert errors.notna().tolist() == [i == 70 for i in range(130)]
    assert errors[70].startswith("row 70: TypeError") and errors[70] == here["MEGNetStructureFeaturizer Exceptions"][70]
    here = here.drop(columns=["structure", "MEGNetStructureFeaturizer Exceptions"])
    assert_float32_close(own.drop(columns="structure").to_numpy(float), here.to_numpy(float),
                         scale=scale_of_outputs(here.columns, here.to_numpy(float)))
    assert not [w for w in out["warnings"] if "Loky" in w or "fork()" in w], out["warnings"]


def test_own_pool_stays_in_process_for_small_inputs_and_daemons(monkeypatch):
    import multiprocessing

    f = MEGNetStructureFeaturizer(n_jobs=4)
    assert f._n_workers(63) == 1 and f._n_workers(200) == 3 and f._n_workers(10_000) == 4
    assert MEGNetStructureFeaturizer(n_jobs=-1)._n_workers(10_000) == os.cpu_count()
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)
    assert f._n_workers(10_000) == 1  # a Pool or Dask worker may not have children


# -- Dask -----------------------------------------------------------------------------------
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")


@pytest.fixture(scope="module")
def cluster():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  silence_logs=50) as local, distributed.Client(local) as client:
        yield client


@pytest.mark.slow
def test_dask_cluster_featurizes_like_in_process_with_a_bad_row(cluster, dielectric_structures):
    from sklearn_atomsets import featurize_dask, to_dask_frame

    structures = list(dielectric_structures[:200])
    column = [s.as_dict() if i % 2 else s for i, s in enumerate(structures)]  # objects and stored dicts
    column[123] = "not a structure"
    frame = pd.DataFrame({"structure": column, "y": np.arange(200.0)})
    featurizer = MEGNetStructureFeaturizer(layers=("f", "V1"), stats=("mean", "max"))
    lazy = featurize_dask(to_dask_frame(frame, npartitions=6), featurizer, "structure", return_errors=True)
    got = lazy.compute()
    clear_feature_cache()
    expected = featurizer.featurize_dataframe(frame, "structure", ignore_errors=True, return_errors=True, pbar=False)
    labels = featurizer.feature_labels()
    assert list(got.columns) == list(expected.columns) and got.index.equals(expected.index)
    assert_float32_close(got[labels].to_numpy(float), expected[labels].to_numpy(float),
                         scale=scale_of_outputs(labels, expected[labels].to_numpy(float)))
    errors = got["MEGNetStructureFeaturizer Exceptions"]
    assert errors.notna().tolist() == [i == 123 for i in range(200)]
    assert errors[123].startswith("index 123: TypeError")
    # each worker process loaded the parent once, whatever the number of partitions
    from sklearn_atomsets import _featurizers

    loaded = cluster.run(lambda: len(_featurizers._ENCODERS))
    assert sorted(loaded.values()) == [1, 1]


@pytest.mark.slow
def test_dask_set_features_and_grid_search_under_the_dask_backend(cluster, dielectric_structures):
    from joblib import parallel_backend
    from sklearn.model_selection import GridSearchCV

    from sklearn_atomsets import featurize_dask, to_dask_frame

    frame = pd.DataFrame({"structure": dielectric_structures[:60]})
    sets = featurize_dask(to_dask_frame(frame, npartitions=2), MEGNetSiteSetFeaturizer(), "structure").compute()
    X = sets["MEGNet V1 set"]
    assert all(isinstance(s, WeightedSet) and s.features.shape[1] == 32 for s in X)
    y = np.array([s.features[:, 0].mean() for s in X])
    search = GridSearchCV(AtomSetsRegressor(max_epochs=3, validation_fraction=None, random_state=0),
                          {"lr": [1e-3, 1e-2], "n_neurons": [(16,), (32,)]}, cv=2)
    with parallel_backend("dask"):
        search.fit(X, y)
    assert len(search.cv_results_["params"]) == 4 and np.isfinite(search.best_score_)


def test_partitions_balanced_by_weight_keep_every_row_in_order(dielectric_structures):
    from sklearn_atomsets import to_dask_frame

    frame = pd.DataFrame({"structure": dielectric_structures[:200], "y": np.arange(200.0)}, index=np.arange(200) * 7)
    sites = frame["structure"].map(len)
    by_rows = to_dask_frame(frame, npartitions=4)
    by_sites = to_dask_frame(frame, npartitions=4, weights=sites)
    site_totals = lambda ddf: [int(sites.loc[p.index].sum()) for p in (ddf.get_partition(k).compute()  # noqa: E731
                                                                         for k in range(ddf.npartitions))]
    balanced, plain = site_totals(by_sites), site_totals(by_rows)
    assert by_sites.npartitions == 4 and sum(balanced) == sites.sum()
    # each partition within one structure of an equal share; equal row counts are further off here
    assert max(balanced) - min(balanced) <= 2 * sites.max() < max(plain) - min(plain)
    got = by_sites.compute()
    assert got.index.equals(frame.index) and got["structure"].tolist() == frame["structure"].tolist()
    assert to_dask_frame(frame, npartitions=4, weights="y").npartitions == 4  # a column name
    with pytest.raises(ValueError, match="one value per row"):
        to_dask_frame(frame, npartitions=2, weights=[1.0, 2.0])
    with pytest.raises(ValueError, match="finite and non-negative"):
        to_dask_frame(frame, npartitions=2, weights=-sites)
    with pytest.raises(ValueError, match="give npartitions, not chunksize"):
        to_dask_frame(frame, chunksize=10, weights=sites)


def test_string_columns_are_refused_with_the_fix():
    import dask.dataframe as dd
    from pymatgen.core import Lattice, Structure

    from sklearn_atomsets import featurize_dask

    cscl = Structure(Lattice.cubic(4.12), ["Cs", "Cl"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    frame = pd.DataFrame({"structure": [cscl] * 2})
    with dask.config.set({"dataframe.convert-string": True}):
        converted = dd.from_pandas(frame, npartitions=1)
    with pytest.raises(TypeError, match="convert-string.*to_dask_frame"):
        featurize_dask(converted, MEGNetStructureFeaturizer(), "structure")
    with pytest.raises(KeyError, match="'formula' not in the frame"):
        featurize_dask(converted, MEGNetStructureFeaturizer(), "formula")


# -- devices --------------------------------------------------------------------------------
class _OnDevice(torch.Tensor):
    """Stands for a tensor on an accelerator, as CUDA treats it: results of ops on it stay
    "on the device", ``.numpy()`` refuses, and only ``.cpu()`` brings it to the host."""

    @property
    def is_cuda(self):  # what skorch.utils.to_numpy checks before calling .cpu()
        return True

    def numpy(self, *args, **kwargs):
        raise TypeError("can't convert cuda:0 device type tensor to numpy. Use Tensor.cpu() first.")

    def cpu(self, *args, **kwargs):
        with torch._C.DisableTorchFunctionSubclass():
            return torch.Tensor.cpu(self, *args, **kwargs).as_subclass(torch.Tensor)


@pytest.fixture
def fake_device(monkeypatch):
    """skorch moves every batch to the device with ``to_tensor``: make those tensors _OnDevice."""
    import skorch.net
    from skorch.utils import to_tensor

    def to_device(X, device, accept_sparse=False):
        out = to_tensor(X, device=device, accept_sparse=accept_sparse)
        if isinstance(out, dict):
            return {k: v.as_subclass(_OnDevice) for k, v in out.items()}
        return out.as_subclass(_OnDevice) if isinstance(out, torch.Tensor) else out

    monkeypatch.setattr(skorch.net, "to_tensor", to_device)


@pytest.mark.parametrize("estimator", [AtomSetsRegressor, AtomSetsClassifier])
def test_fit_with_validation_split_converts_device_tensors_on_the_host(estimator, fake_device):
    X = [WeightedSet.from_composition(f) for f in ["Cu", "Fe", "NaCl", "MgO"] * 10]
    y = np.arange(40.0) if estimator is AtomSetsRegressor else ["metal", "metal", "salt", "salt"] * 10
    with pytest.raises(TypeError, match="device type tensor to numpy"):  # the fake device bites
        torch.ones(2).as_subclass(_OnDevice).numpy()
    model = estimator(max_epochs=3, validation_fraction=0.25, random_state=0, device=torch.device("cpu")).fit(X, y)
    assert np.isfinite(model.best_validation_score_)
    assert len(model.predict(X[:3])) == 3


def test_device_accepts_torch_device_and_rejects_other_types():
    X, y = [WeightedSet.from_composition("NaCl")] * 8, np.arange(8.0)
    AtomSetsRegressor(max_epochs=1, validation_fraction=None, device=torch.device("cpu")).fit(X, y)
    with pytest.raises(ValueError, match="device"):
        AtomSetsRegressor(max_epochs=1, device=0).fit(X, y)


def test_featurizer_device_parameter(pymatgen_structures):
    structures = pymatgen_structures[:3]
    here = MEGNetStructureFeaturizer(cache=False).featurize_many(structures, pbar=False)
    there = MEGNetStructureFeaturizer(cache=False, device=torch.device("cpu")).featurize_many(structures, pbar=False)
    assert_float32_close(here, there)
    assert MEGNetStructureFeaturizer(device="meta")._encoder().module_.element_embedding().device.type == "meta"
