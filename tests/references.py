"""What the reference checks share: hypothesis settings for small random shapes, and one BLAS
thread per test (imported into a test module, the fixture applies to its tests)."""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from threadpoolctl import threadpool_limits

SMALL = settings(max_examples=15, deadline=None)
TINY = settings(max_examples=8, deadline=None)
seeds = st.integers(0, 2**31 - 1)


@pytest.fixture(autouse=True)
def one_blas_thread():
    """One BLAS thread: the reference and the routine sum in the same order on any machine."""
    with threadpool_limits(1):
        yield
