"""Runner processes for the studies beside the MatBench table (protocol_options.py, richer_sets.py).

Each run is one ``python -m sklearn_atomsets matbench ...`` process writing into its own folder;
a folder that already holds the task's results is not run again, so a study can be restarted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_runner(task, where, args):
    """``sklearn_atomsets matbench --tasks task <args> --out where`` (log in ``where/log.txt``), unless
    ``where`` already holds the task's results; its wall time (0 when skipped)."""
    where = Path(where)
    if (where / f"{task}.json").is_file():
        return 0.0
    where.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "sklearn_atomsets", "matbench", "--tasks", task, *args, "--out", str(where)]
    start = time.perf_counter()
    with open(where / "log.txt", "w") as log:
        subprocess.run(command, check=True, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                       env={**os.environ, "MATMINER_DATA": os.environ.get(
                           "MATMINER_DATA", str(HERE.parent.parent / "shared" / "data" / "matbench"))})
    return time.perf_counter() - start


def run_all(runs, processes):
    """``runs``: ``[(label, task, folder, args)]``, ``processes`` at a time; prints each one's wall time."""
    start = time.perf_counter()
    with ThreadPoolExecutor(processes) as pool:
        walls = list(pool.map(lambda r: run_runner(*r[1:]), runs))
    for (label, *_), wall in zip(runs, walls):
        print(f"{label}: {wall:.0f} s" + (" (already on disk)" if wall == 0 else ""))
    print(f"wall time {time.perf_counter() - start:.0f} s with {processes} processes")


def study_parser(doc, out):
    """The command line every study shares: ``--summary-only``, ``--processes``, ``--out``."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--summary-only", action="store_true", help="only summarise what is on disk")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=out)
    return parser
