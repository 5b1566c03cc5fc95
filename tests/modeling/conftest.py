"""Model tests run on a single intra-op thread: the models are tiny, and two threads competing with
other test processes on a small machine made these tests several times slower."""
import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
