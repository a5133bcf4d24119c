"""Encoding under load: torch threads per process, idle and next to one busy process, in one run.

Featurizes the first ``--n`` MatBench dielectric structures (V1 sets, cache off) with

* the old default: torch's own thread count (one per CPU; what ``n_jobs=None`` left),
* the new default: ``torch_threads=None`` = 1 thread,
* the old default again in a child process with ``OMP_WAIT_POLICY=PASSIVE`` (OpenMP threads
  sleep at barriers instead of spinning): the diagnosis,

first on the machine as it is, then with one busy process (``python -c "while True: pass"``)
started and killed by this script. Runs alternate between settings; the median of
``--repeats`` is printed, with CPU time / wall time (how many cores the run kept busy).

    MATMINER_DATA=/work/shared/data/matbench python benchmarks/threads_under_load.py --n 500
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from encoder_throughput import load_dielectric  # noqa: E402 - one loader for the benchmarks' dielectric set


def encode_once(structures, torch_threads):
    """(wall s, process CPU s) of one featurization."""
    from sklearn_atomsets import MEGNetSiteSetFeaturizer

    f = MEGNetSiteSetFeaturizer("V1", cache=False, torch_threads=torch_threads)
    f.feature_labels()  # load the parent outside the timing
    t, c = time.perf_counter(), time.process_time()
    f.featurize_many(structures, pbar=False)
    return time.perf_counter() - t, time.process_time() - c


def child(n, repeats):
    """Run in a subprocess (OMP_WAIT_POLICY must be set before OpenMP starts)."""
    structures = load_dielectric(n)
    encode_once(structures[:20], -1)
    print(json.dumps([encode_once(structures, -1) for _ in range(repeats)]))


def measure(structures, repeats, n):
    settings = {"old default (torch: 1 thread per CPU)": -1, "new default (1 thread)": None}
    runs = {name: [] for name in settings}
    for _ in range(repeats):
        for name, threads in settings.items():
            runs[name].append(encode_once(structures, threads))
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, __file__, "--child", "--n", str(n), "--repeats", str(repeats)],
                         env=env, capture_output=True, text=True, check=True)
    runs["old default, OMP_WAIT_POLICY=PASSIVE"] = json.loads(out.stdout.strip().splitlines()[-1])
    return {name: (statistics.median(w for w, _ in r), statistics.median(c / w for w, c in r)) for name, r in runs.items()}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.n, args.repeats)
    import torch

    structures = load_dielectric(args.n)
    encode_once(structures[:20], None)  # warm up
    print(f"{args.n} dielectric structures, V1 sets; {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"torch's own default {torch.get_num_threads()} threads; load average {os.getloadavg()[0]:.1f} at start")
    results = {"as is": measure(structures, args.repeats, args.n)}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.5)
        results["+1 busy process"] = measure(structures, args.repeats, args.n)
    finally:
        busy.kill()
        busy.wait()
    print(f"{'setting':42s} {'machine':16s} {'wall s':>7s} {'struct/s':>9s} {'CPU/wall':>9s}")
    for load_name, rows in results.items():
        for name, (wall, busy_cores) in rows.items():
            print(f"{name:42s} {load_name:16s} {wall:7.2f} {args.n / wall:9.0f} {busy_cores:9.2f}")
    for load_name, rows in results.items():
        old, new = rows["old default (torch: 1 thread per CPU)"][0], rows["new default (1 thread)"][0]
        print(f"{load_name}: new default is {old / new:.2f}x the speed of the old one")


if __name__ == "__main__":
    main()
