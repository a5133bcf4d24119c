"""torch's CPU thread count for a block of work, restored afterwards.

Shared by the encoder-driven featurizers and the estimators. The networks here are small:
each batch is a few dozen short kernels, and every parallel kernel ends in an OpenMP
barrier, so on a busy machine (other jobs, folds of a grid search in parallel) a
descheduled thread stalls all the others. One thread per process is the default
(``DEFAULT_TORCH_THREADS``; ``benchmarks/threads_under_load.py`` measures why); scale out
with processes (matminer's ``n_jobs``, joblib, Dask workers) instead.

Why ``torch.set_num_threads`` and not ``threadpoolctl.threadpool_limits`` (measured with
torch 2.13 CPU): threadpoolctl sets the limit of the OpenMP/BLAS libraries it finds loaded,
so inside ``threadpool_limits(1)`` ``torch.get_num_threads()`` reports 1 -- yet a matmul
(torch's own MKL, which threadpoolctl cannot see) and elementwise kernels still run on the
threads torch was given before (per-thread CPU time from /proc, see
``tests/test_parallel.py::test_threadpoolctl_does_not_limit_torch``). So the limit is set
through torch, scoped by :func:`torch_threads` and restored afterwards.

A process started by ``fork`` inherits a copy of the parent's OpenMP state but not its
threads; GNU OpenMP then blocks in the first parallel region. In a forked child every
:func:`torch_threads` block therefore runs one thread, whatever was asked.
"""

from __future__ import annotations

import os
from contextlib import contextmanager

__all__ = ["DEFAULT_TORCH_THREADS", "resolve_torch_threads", "torch_threads"]

#: torch intra-op threads when a parameter says ``None``.
DEFAULT_TORCH_THREADS = 1

_forked_child = False


def _after_fork_in_child():
    global _forked_child
    _forked_child = True


os.register_at_fork(after_in_child=_after_fork_in_child)


def resolve_torch_threads(n_threads):
    """The thread count ``n_threads`` stands for: ``None`` -> ``DEFAULT_TORCH_THREADS``,
    -1 all CPUs, -2 all but one, ...; 1 in a forked child (see the module docstring).

    joblib's ``effective_n_jobs`` is not used on purpose: inside a Dask or Ray backend it
    returns the cluster's worker count, which is not a thread count for this process.
    """
    if n_threads is None:
        n = DEFAULT_TORCH_THREADS
    elif n_threads < 0:
        n = max((os.cpu_count() or 1) + 1 + int(n_threads), 1)
    elif n_threads == 0:
        raise ValueError("torch threads must be a positive integer, a negative one (-1: all CPUs) or None, got 0.")
    else:
        n = int(n_threads)
    return 1 if _forked_child else n


@contextmanager
def torch_threads(n_threads):
    """Run the block with ``resolve_torch_threads(n_threads)`` torch intra-op threads."""
    import torch

    n = resolve_torch_threads(n_threads)
    before = torch.get_num_threads()
    if n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)
