"""The train / validation / test split, stratified by class.

The data set is shuffled with ``data.split_seed`` and split stratified into ``n_train`` /
``n_val`` / ``n_test`` (the default: 3,500 / 500 / 1,000 MNIST digits, 350 / 50 / 100 per class).
Where a data set has an official test set, it is the test split and the validation split is held
out of the training set.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import torch

from lwta_utils.core.errors import ConfigError, bad
from lwta_utils.core.registry import DATASETS
from lwta_utils.data.datasets import DataInfo


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


def stratified_order(y: torch.Tensor, seed: int) -> torch.Tensor:
    """An order of ``y``'s indices in which every prefix holds the class mix of ``y`` as closely
    as whole counts allow (within one example of each class's share).

    The i-th example of a class with n examples (in a seeded random order within the class) is
    placed at (i + u) / n, u ~ U(0, 1): the classes interleave at their own rates, so the first
    k examples hold about k * n_c / N of class c; the u's break ties at random.
    """
    y_np = y.numpy()
    rng = np.random.default_rng(seed)
    keys = np.empty(len(y_np))
    for c in np.unique(y_np):
        idx = rng.permutation(np.flatnonzero(y_np == c))
        keys[idx] = (np.arange(len(idx)) + rng.uniform(size=len(idx))) / len(idx)
    return torch.as_tensor(np.argsort(keys, kind="stable"), dtype=torch.int64)


def load_data(cfg) -> Splits:
    """Load ``cfg.data`` (a DataConfig, or a StudyConfig holding one) and split it."""
    d = getattr(cfg, "data", cfg)
    loader, info = DATASETS.lookup("data.name", d.name)
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
    if d.test_order == "stratified":  # every prefix stratified: attacks run on the first n digits
        order = stratified_order(y_test, d.split_seed)
        x_test, y_test = x_test[order], y_test[order]
    digest = hashlib.sha256(b"".join(i.numpy().tobytes() for i in (i_tr, i_va))).hexdigest()[:12]
    return Splits(info, x_pool[i_tr], y_pool[i_tr], x_pool[i_va], y_pool[i_va], x_test, y_test,
                  meta={"split_seed": d.split_seed, "split_hash": digest, "test_order": d.test_order})
