"""Model tests: ``polar_test_utils`` importable (also under ``--import-mode=importlib``), and a single
intra-op thread — the models are tiny, and two threads competing with other test processes on a
small machine made these tests several times slower."""
import os
import sys

import pytest
import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
