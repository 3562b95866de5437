import copy

import pytest
import torch

import lwta_utils as lu
from lwta_utils.models import build_model
from lwta_utils.train import fit


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(2)


@pytest.fixture(scope="session")
def smoke_cfg():
    return lu.load_config("smoke", out_dir="/tmp/lwta-tests-unused")


@pytest.fixture
def cfg(tmp_path):
    """The smoke profile with outputs in a fresh temporary folder."""
    return lu.load_config("smoke", out_dir=str(tmp_path / "out"))


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
