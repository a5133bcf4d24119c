"""Docstring and docs examples that read MatBench data are skipped where the data is absent.

A user's fresh clone has no ``../shared`` and no ``$MATMINER_DATA``, and the machine may be
offline: an example calling ``load_matbench_task("<task>", ...)`` is then reported as a skip
that names the missing data, instead of failing the README's test command. Where the data is
found (CI, beside ``../shared``), the example runs.
"""

from __future__ import annotations

import re

import pytest

_LOADS_TASK = re.compile(r"""load_matbench_(?:composition_)?task\(\s*["'](matbench_\w+)["']""")


def pytest_collection_modifyitems(config, items):
    from _pytest.doctest import DoctestItem

    from sklearn_atomsets.matbench.tasks import find_matbench_data

    for item in items:
        if not isinstance(item, DoctestItem) or item.dtest is None:
            continue
        tasks = sorted({task for example in item.dtest.examples for task in _LOADS_TASK.findall(example.source)})
        missing = [task for task in tasks if find_matbench_data(task)[0] is None]
        if missing:
            item.add_marker(pytest.mark.skip(
                reason=f"MatBench data for {', '.join(missing)} not found (set MATMINER_DATA or put ../shared "
                       "beside the checkout)"))
