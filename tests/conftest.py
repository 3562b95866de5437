import copy
import os

import pytest
import torch

import lwta_utils as lu
from lwta_utils.core.provenance import usable_cores
from lwta_utils.models import build_model
from lwta_utils.training.fit import fit


def _workers() -> int:
    """pytest-xdist's worker processes (1 without xdist or with -n 0)."""
    return int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))


# Each worker its share of the cores, and every process it starts (a chain's notebook kernels, a
# benchmark, a torchrun) the same share through OMP_NUM_THREADS (torch: ``core.runtime.default_threads``)
# and NUMBA_NUM_THREADS (the LWTA kernels): more threads than cores makes the OpenMP threads of torch
# and numba spin waiting on each other (the smoke chain took 3x longer).
THREADS = max(1, min(2, usable_cores() // _workers()))
if _workers() > 1:
    os.environ["OMP_NUM_THREADS"] = os.environ["NUMBA_NUM_THREADS"] = str(THREADS)


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(THREADS)


LONGEST_FIRST = ("test_chain.py", "test_paper_scale.py")  # the smoke chain (minutes), then the tiny paper chain


def pytest_collection_modifyitems(config, items):
    """The longest files first, the smoke chain's first of all: with ``--dist loadfile
    --no-loadscope-reorder`` a file's tests share one worker (and one smoke chain), and the files
    go to the workers in this order."""
    def rank(item):
        name = item.path.name
        return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)

    items.sort(key=rank)


# The fixtures' split: the smoke profile's with 600 training and 200 test digits (the profile's
# chain: 300 and 100): the fixture models must learn something in 3 epochs (test_attacks,
# test_train), and the tests attack up to 100 test digits
FIXTURE_DATA = {"data.n_train": 600, "data.n_test": 200}


@pytest.fixture(scope="session")
def smoke_cfg():
    return lu.load_config("smoke", out_dir="/tmp/lwta-tests-unused", overrides=FIXTURE_DATA)


@pytest.fixture
def cfg(tmp_path):
    """The smoke profile (the fixtures' split) with outputs in a fresh temporary folder."""
    return lu.load_config("smoke", out_dir=str(tmp_path / "out"), overrides=FIXTURE_DATA)


@pytest.fixture(scope="session")
def splits(smoke_cfg):
    return lu.load_data(smoke_cfg)


@pytest.fixture(scope="session")
def trained(smoke_cfg, splits):
    """A ReLU CNN trained for 3 epochs on the smoke split (a few seconds)."""
    m = copy.deepcopy(smoke_cfg.models["relu_std"])
    m.train.epochs = 3
    torch.manual_seed(0)
    model = build_model(m, splits.info)
    fit(model, splits, m.train, device=torch.device("cpu"), seed=0, progress=False)
    return model.eval()


def write_fake_cifar10(root, per_batch: int = 20, n_test: int = 40, seed: int = 0):
    """CIFAR-10 python batches (torchvision's layout, random pixels, balanced labels) under ``root``;
    returns the test images (uint8, N x 3 x 32 x 32) and labels as written."""
    import pickle

    import numpy as np

    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    written = None
    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.permutation(np.arange(n) % 10)]
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels, b"batch_label": name.encode()}, fh)
        written = (data.reshape(-1, 3, 32, 32), labels)
    return written


@pytest.fixture
def fake_cifar10(tmp_path):
    root = tmp_path / "data"
    x_test, y_test = write_fake_cifar10(root)
    return root, x_test, y_test
