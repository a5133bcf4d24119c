"""torch's CPU thread count for a block of work, restored afterwards.

Shared by the encoder-driven featurizers and the estimators. The networks here are small:
each batch is a few dozen short kernels, and every parallel kernel ends in an OpenMP
barrier, so on a busy machine (other jobs, folds of a grid search in parallel) a
descheduled thread stalls all the others. Fewer threads than cores is often faster.
"""

from __future__ import annotations

from contextlib import contextmanager

__all__ = ["torch_threads"]


@contextmanager
def torch_threads(n_jobs):
    """Run the block with ``n_jobs`` torch threads (joblib's meaning: -1 all cores,
    -2 all but one, ...); ``None`` leaves torch's own setting."""
    if n_jobs is None:
        yield
        return
    import torch
    from joblib import effective_n_jobs

    before = torch.get_num_threads()
    torch.set_num_threads(effective_n_jobs(n_jobs))
    try:
        yield
    finally:
        torch.set_num_threads(before)
