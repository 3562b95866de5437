import numpy as np
import pytest
import torch

import lwta_utils as lu
from lwta_utils.core.errors import ConfigError
from lwta_utils.data.augment import augment_batch
from lwta_utils.data.splits import stratified_order, stratified_split


def test_default_split_sizes_shapes_and_range():
    s = lu.load_data(lu.load_config("default"))
    assert (len(s.y_train), len(s.y_val), len(s.y_test)) == (3500, 500, 1000)
    for x, y in ((s.x_train, s.y_train), (s.x_val, s.y_val), (s.x_test, s.y_test)):
        assert x.dtype == torch.float32 and x.shape[1:] == (1, 28, 28)
        assert y.dtype == torch.int64 and len(x) == len(y)
        assert x.min() >= 0 and x.max() <= 1 and x.max() > 0.9
    # stratified: exactly 350 / 50 / 100 digits of every class
    for y, n in ((s.y_train, 350), (s.y_val, 50), (s.y_test, 100)):
        assert np.bincount(y.numpy(), minlength=10).tolist() == [n] * 10


def test_splits_are_disjoint_and_shuffled():
    s = lu.load_data(lu.load_config("default"))
    keys = [{hash(img.numpy().tobytes()) for img in x} for x in (s.x_train, s.x_val, s.x_test)]
    assert not keys[0] & keys[1] and not keys[0] & keys[2] and not keys[1] & keys[2]
    # the source is sorted by label; the split is not
    assert len(set(s.y_train[:50].tolist())) > 5


def test_split_is_seeded():
    y = torch.arange(10).repeat_interleave(50)
    a = stratified_split(y, [100, 50], seed=3)
    b = stratified_split(y, [100, 50], seed=3)
    c = stratified_split(y, [100, 50], seed=4)
    assert all(torch.equal(i, j) for i, j in zip(a, b))
    assert not torch.equal(a[0], c[0])
    assert not set(a[0].tolist()) & set(a[1].tolist())


def test_every_prefix_of_the_test_split_is_stratified():
    s = lu.load_data(lu.load_config("default"))
    counts = np.cumsum(np.eye(10, dtype=int)[s.y_test.numpy()], axis=0)      # class counts of every prefix
    k = np.arange(1, len(s.y_test) + 1)[:, None]
    assert np.abs(counts - k / 10).max() <= 1.0                                # within one digit of k / 10
    assert np.bincount(s.y_test[:200].numpy()).tolist() == [20] * 10          # Square's 200 digits
    r = lu.load_data(lu.load_config("default", overrides={"data.test_order": "random"}))
    assert sorted(map(bytes, r.x_test.numpy())) == sorted(map(bytes, s.x_test.numpy()))   # same digits
    rc = np.cumsum(np.eye(10, dtype=int)[r.y_test.numpy()], axis=0)
    assert np.abs(rc - k / 10).max() > 2                                       # a random order drifts
    # unequal classes interleave at their own rates; the order is seeded
    y = torch.tensor([0] * 60 + [1] * 30 + [2] * 10)
    o = stratified_order(y, seed=1)
    assert sorted(o.tolist()) == list(range(100)) and torch.equal(o, stratified_order(y, seed=1))
    c = np.cumsum(np.eye(3, dtype=int)[y[o].numpy()], axis=0)
    assert np.abs(c - np.arange(1, 101)[:, None] * np.array([0.6, 0.3, 0.1])).max() <= 1.0


def test_the_test_order_reaches_evaluations_not_checkpoints():
    a, b = lu.load_config("default"), lu.load_config("default", overrides={"data.test_order": "random"})
    assert a.model_hash("relu_std") == b.model_hash("relu_std")
    assert a.eval_hash("relu_std") != b.eval_hash("relu_std")
    with pytest.raises(ConfigError, match="'data.test_order' = 'sorted'"):
        lu.load_config("default", overrides={"data.test_order": "sorted"})


def test_split_too_large_is_refused():
    with pytest.raises(ConfigError, match="n_train"):
        lu.load_data(lu.load_config("default", overrides={"data.n_train": 4600}))


def test_augment_keeps_shape_and_range_and_moves_pixels(splits):
    x = splits.x_train[:32]
    g = torch.Generator().manual_seed(0)
    out = augment_batch(x, "shift", 2, g)
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 1
    assert not torch.equal(out, x)
    assert torch.equal(augment_batch(x, "none", 2, g), x)
    flipped = augment_batch(x, "crop_flip", 0, torch.Generator().manual_seed(1))
    assert flipped.shape == x.shape


def test_torchvision_datasets_fail_clearly_without_torchvision():
    try:
        import torchvision  # noqa: F401
        pytest.skip("torchvision imports here")
    except Exception:
        pass
    with pytest.raises(ConfigError, match="torchvision"):
        lu.load_data(lu.load_config("smoke", overrides={"data.name": "mnist"}))
