"""Engine tests run many tiny ops: one intra-op thread (handing microsecond ops to a pool costs more than they do)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_intra_op_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
