"""Test-suite settings shared by every test directory."""

import logging

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


@pytest.fixture(autouse=True, scope="session")
def _quiet_lightning():
    """Keep Lightning's start-up messages out of the test output."""
    loggers = [logging.getLogger(name) for name in ("lightning", "lightning.pytorch", "lightning.fabric")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    yield
    for log, level in zip(loggers, levels):
        log.setLevel(level)
