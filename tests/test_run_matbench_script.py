"""benchmarks/run_matbench.sh's job bookkeeping, with a stand-in for Python that records each call
instead of fitting: which (job, seed) processes start, which are skipped, and the done files."""

from __future__ import annotations

import os
import stat
import subprocess

from .conftest import REPO

PLAN_HEADER = "# part\tslot\tjob\ttask\tcomposition_only\tmodel\tseeds\tfolds\testimated_s\n"


def _fake_python(path, calls):
    path.write_text(f"#!/usr/bin/env bash\necho \"$*\" >> {calls}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_rest_runs_every_unfinished_seed_once_and_marks_jobs_done(tmp_path):
    rows = [("1", "1", "a", "matbench_steels", "0", "AtomSets", "0 1", "0 1 2 3 4", "10"),
            ("1", "2", "b", "matbench_steels", "0", "AtomSets-V0 x5", "0 1 2", "0 1 2 3 4", "10"),
            ("2", "1", "c", "matbench_mp_gap", "1", "AtomSets", "2", "0 1 2 3 4", "10")]
    plan = tmp_path / "plan.tsv"
    plan.write_text(PLAN_HEADER + "".join("\t".join(row) + "\n" for row in rows))
    jobs = tmp_path / "results" / "matbench_seeds" / "jobs"
    (jobs / "a").mkdir(parents=True)
    (jobs / "a" / "done").touch()  # a finished job
    (jobs / "c" / "seed2").mkdir(parents=True)
    (jobs / "c" / "seed2" / "done").touch()  # a job whose only seed finished, its own done file not yet written
    calls = tmp_path / "calls.txt"
    env = dict(os.environ, PLAN=str(plan), PYTHON=str(_fake_python(tmp_path / "python", calls)), WORKERS="2")
    subprocess.run(["bash", str(REPO / "benchmarks" / "run_matbench.sh"), "rest", str(tmp_path / "results")],
                   env=env, check=True, capture_output=True, text=True, timeout=60)

    lines = calls.read_text().splitlines()
    fits = sorted(line for line in lines if "-m sklearn_atomsets matbench" in line)
    assert len(fits) == 3 and all("--models AtomSets-V0 --" in line for line in fits)  # job b's 3 seeds only
    assert [line.split("--seeds ")[1].split()[0] for line in fits] == ["0", "1", "2"]
    assert all("--ensemble 5 --selected-from" in line and "--patience 200" in line for line in fits)
    assert sum("benchmarks/report.py" in line for line in lines) == 1  # the report, once at the end
    assert all((jobs / job / "done").is_file() for job in "abc")
    assert all((jobs / "b" / f"seed{seed}" / "done").is_file() for seed in range(3))

    calls.unlink()  # nothing left to run
    done = subprocess.run(["bash", str(REPO / "benchmarks" / "run_matbench.sh"), "rest", str(tmp_path / "results")],
                          env=env, check=True, capture_output=True, text=True, timeout=60)
    assert "every job" in done.stdout and not calls.exists()


def test_the_plans_flags_column_reaches_the_runner_after_the_protocol(tmp_path):
    """A job's flags (the composition-only protocol, a narrowed loss grid) come after PROTOCOL's, so they
    win; a job without flags runs PROTOCOL as it is -- in a slot and with WORKERS alike."""
    header = PLAN_HEADER.replace("estimated_s\n", "estimated_s\tflags\n")
    rows = [("1", "1", "a", "matbench_mp_gap", "1", "AtomSets", "0", "0 1 2 3 4", "10",
             "--select loss=mae readout=mean,set2set --patience-steps 5000 --max-steps 50000"),
            ("1", "1", "b", "matbench_steels", "0", "AtomSets", "0 1", "0 1 2 3 4", "10", "")]
    plan = tmp_path / "plan.tsv"
    plan.write_text(header + "".join("\t".join(row) + "\n" for row in rows))
    for workers in ("", "2"):
        calls = tmp_path / f"calls{workers}.txt"
        env = dict(os.environ, PLAN=str(plan), PYTHON=str(_fake_python(tmp_path / "python", calls)), WORKERS=workers)
        which = "rest" if workers else "1"
        subprocess.run(["bash", str(REPO / "benchmarks" / "run_matbench.sh"), which, str(tmp_path / f"out{workers}")],
                       env=env, check=True, capture_output=True, text=True, timeout=60)
        fits = [line for line in calls.read_text().splitlines() if "-m sklearn_atomsets matbench" in line]
        gap = [line for line in fits if "matbench_mp_gap" in line]
        steels = [line for line in fits if "matbench_steels" in line]
        assert len(gap) == 1 and len(steels) == (2 if workers else 1)
        assert gap[0].index("--patience-steps 5000 --max-steps 50000") > gap[0].index("--patience 200")
        assert gap[0].rindex("--select") > gap[0].index("--select") and "--composition-only" in gap[0]
        assert all("--patience-steps" not in line and line.count("--select") == 1 for line in steels)
