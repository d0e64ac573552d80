"""A booted kernel (mock vendor) for the library tests; at teardown every page a
test took has been given back (tables freed through the gather or by deinit)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from kernel.boot import Kernel
from tests.kernel.conftest import KernelFactory


@pytest.fixture
def k(make_kernel: KernelFactory) -> Iterator[Kernel]:
    kern = make_kernel()
    free = kern.mm.free_page_count
    yield kern
    kern.activate()
    assert kern.mm.free_page_count == free, "page-table pages leaked"
