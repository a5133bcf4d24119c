"""Two processes featurizing disjoint structures through one cache folder: how long they wait.

Process 0 featurizes MatBench dielectric structures ``[0, n)``, process 1 ``[n, 2n)`` (V1 sets,
``cache=<folder>``), both starting together (each loads the parent, then waits at a barrier).
With ``--folders shared`` both name one folder, so the bucket locks of ``locks/`` can collide;
with ``--folders separate`` each has its own (no lock is ever shared: the baseline). Each
process prints its wall time, the structures it left for the second round (their bucket held
by the other) and the seconds it waited there for the other's locks.

    MATMINER_DATA=/work/shared/data/matbench python benchmarks/disk_cache_contention.py --n 300
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
sys.path.insert(0, sys.argv[5])
from encoder_throughput import load_dielectric
import sklearn_atomsets._featurizers as module
from sklearn_atomsets import MEGNetSiteSetFeaturizer
part, n, folder, barrier = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
structures = load_dielectric(2 * n)[part * n : (part + 1) * n]
featurizer = MEGNetSiteSetFeaturizer("V1", cache=folder)
featurizer.feature_labels()  # the parent loaded outside the timing
stats = {"second_round": 0, "waited_s": 0.0}
claim = module._disk_claim
def timed_claim(folder, keys, held, wait):
    start = time.perf_counter()
    out = claim(folder, keys, held, wait)
    if wait:
        stats["second_round"] += len(keys)
        stats["waited_s"] += time.perf_counter() - start
    return out
module._disk_claim = timed_claim
open(os.path.join(barrier, str(part)), "w").close()
while len(os.listdir(barrier)) < 2:
    time.sleep(0.005)
start = time.perf_counter()
featurizer.featurize_many(structures, pbar=False)
print(json.dumps({"part": part, "wall_s": round(time.perf_counter() - start, 2), **stats}))
"""


def run(n, shared):
    here = os.path.dirname(os.path.abspath(__file__))
    with tempfile.TemporaryDirectory() as tmp:
        barrier = os.path.join(tmp, "barrier")
        os.mkdir(barrier)
        folders = [os.path.join(tmp, "cache" if shared else f"cache{p}") for p in (0, 1)]
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        children = [subprocess.Popen([sys.executable, "-c", CHILD, str(p), str(n), folders[p], barrier, here],
                                     stdout=subprocess.PIPE, env=env, text=True) for p in (0, 1)]
        out = [json.loads(c.communicate()[0].strip().splitlines()[-1]) for c in children]
        return out, len(os.listdir(os.path.join(folders[0], "locks")))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="structures per process")
    parser.add_argument("--folders", choices=["shared", "separate", "both"], default="both")
    args = parser.parse_args(argv)
    for mode in (["separate", "shared"] if args.folders == "both" else [args.folders]):
        start = time.perf_counter()
        out, n_locks = run(args.n, mode == "shared")
        print(json.dumps({"folders": mode, "n": args.n, "total_wall_s": round(time.perf_counter() - start, 1),
                          "lock_files": n_locks, "processes": out}))


if __name__ == "__main__":
    main()
