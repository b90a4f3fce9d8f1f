"""The execution layer: where jobs run (one rule), map_jobs in this process and on a cluster."""

from __future__ import annotations

import contextlib

import pytest

from actstore import ActstoreError, Execution
from actstore._execution import map_jobs


def _square(x: int) -> int:
    return x * x


def _fail_on_two(x: int) -> int:
    if x == 2:
        raise ValueError("two")
    return x


@pytest.mark.parametrize(("execution", "url", "here"), [
    (Execution(), "s.zarr", False),                      # a local cluster
    (Execution(workers=1), "s.zarr", True),
    (Execution(), "memory://s", True),                   # no worker can open it
    (Execution(scheduler="tcp://h:8786"), "memory://s", True),
    (Execution(device="cuda"), "s.zarr", True),          # one process drives the GPU
    (Execution(device="cuda", workers=2), "s.zarr", False),
    (Execution(scheduler="tcp://h:8786", workers=1), "s.zarr", False),
])
def test_one_rule_says_where_jobs_run(execution, url, here):
    assert execution.in_process(url) is here
    assert (execution.job_url(url) == url) is (here or "://" in url)


@pytest.mark.parametrize("kwargs", [{"workers": 0}, {"scheduler": "no-address"},
                                    {"timeout": 0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ActstoreError):
        Execution(**kwargs)


def test_in_this_process_results_come_in_order_with_progress():
    seen = []
    ex = Execution(workers=1, progress=lambda stage, done, total: seen.append((stage, done,
                                                                              total)))
    out = list(map_jobs(_square, [(i,) for i in range(4)], ex, stage="sq"))
    assert out == [(0, 0), (1, 1), (2, 4), (3, 9)]
    assert seen == [("sq", i, 4) for i in range(5)]


def test_a_failing_job_stops_the_iteration_or_is_returned():
    ex = Execution(workers=1)
    with pytest.raises(ValueError, match="two"):
        list(map_jobs(_fail_on_two, [(i,) for i in range(4)], ex))
    out = dict(map_jobs(_fail_on_two, [(i,) for i in range(4)], ex, errors="return"))
    assert [out[i] for i in (0, 1, 3)] == [0, 1, 3] and isinstance(out[2], ValueError)


def test_closing_early_runs_no_more_jobs_in_this_process():
    calls = []

    def job(x: int) -> int:
        calls.append(x)
        return x

    with contextlib.closing(map_jobs(job, [(i,) for i in range(5)], Execution(workers=1))) as it:
        next(it)
    assert calls == [0]


def test_on_a_local_cluster_every_result_comes_back_once():
    out = dict(map_jobs(_fail_on_two, [(i,) for i in range(6)], Execution(workers=2),
                        errors="return"))
    assert sorted(out) == list(range(6))
    assert isinstance(out[2], ValueError) and out[5] == 5
