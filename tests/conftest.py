"""Test-suite settings shared by every test directory."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="session")
def _single_intra_op_thread():
    """Run the suite on one torch thread.

    The filters' many tiny matrix operations are fastest on one thread, and on a shared 2-core
    machine extra threads make them orders of magnitude slower (spinning OpenMP workers).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
