"""What the parent-throughput benchmarks share (chgnet_throughput.py, sevennet_throughput.py).

Each compares another package's own way of running a parent with ours on the same MatBench
dielectric structures; this module holds their command line, set-up, header, peak memory and
results file, so that a benchmark script holds only what it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from encoder_throughput import load_dielectric, timed  # noqa: E402 - the same data and timer as the MEGNet benchmark

__all__ = ["load_dielectric", "parser", "peak_rss_mib", "print_header", "set_up", "timed", "write_results"]


def parser(doc, parent, limit, limit_help, batch_help="structures per forward pass (ours)"):
    """The shared options (--n, --batch-size, --parent, --threads) and the benchmark's own
    limit on its slowest path (``limit``, e.g. ``"--efsm-limit"``)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=0, help="structures (default 0: all 4764)")
    p.add_argument("--batch-size", type=int, default=64, help=batch_help)
    p.add_argument(limit, type=int, default=0, help=limit_help)
    p.add_argument("--parent", default=parent)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    return p


def set_up(args):
    """Quiet warnings, torch's threads, the structures; returns the structures."""
    import torch

    warnings.filterwarnings("ignore")  # pymatgen's noble-gas electronegativity, the packages' notices
    if args.threads:
        torch.set_num_threads(args.threads)
    return load_dielectric(args.n)


def print_header(args, n):
    import torch

    print(f"{n} MatBench dielectric structures, parent {args.parent}, batch size {args.batch_size}")
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__} ({torch.get_num_threads()} threads), "
          f"python {platform.python_version()}")


def peak_rss_mib():
    """Peak resident memory of this process so far, MiB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_results(script, args, argv, counts, **measured):
    """benchmarks/results/<script>.json: the structure ``counts``, the run's settings, what was
    ``measured``, and the command."""
    import torch

    results = {**counts, "batch_size": args.batch_size, "parent": args.parent,
               "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), **measured}
    results["command"] = f"python benchmarks/{script}.py " + " ".join(argv if argv is not None else sys.argv[1:])
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    (out_dir / f"{script}.json").write_text(json.dumps(results, indent=2) + "\n")
