"""The LWTA authors' released CIFAR-10 checkpoint: the state-dict mapping, the checks of its files,
and the faithfulness of the project's model to the authors' architecture (same weights, same frozen
winner masks -> same logits).

``PlainWRN`` below restates the authors' network from the study's reference (REFERENCE section 1)
and the released README, independently of the project's code: a pre-activation WideResNet in the
TRADES layout (BN - LWTA - conv - BN - LWTA - conv per block; where the width changes the block
activates its input first and the 1x1 shortcut takes the activated input; final BN - LWTA - 8x8
average pool - fc), and LWTA = a Gumbel-softmax over pairs of adjacent channels at the test
temperature 0.01, output h * mask. Tests that need the real files skip when ../shared/released
is absent.
"""
import dataclasses
import io
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import lwta_utils  # noqa: F401  (fills the registries)
from lwta_utils.config.loading import load_config
from lwta_utils.config.schema import AttackConfig, ReleasedConfig
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.modes import eval_mode
from lwta_utils.core.paths import resolve
from lwta_utils.core.registry import DATASETS
from lwta_utils.core.switches import switches
from lwta_utils.defenses.lwta import lwta_layers
from lwta_utils.evaluation.released import (
    ReleasedFiles,
    ReleasedUnavailable,
    find_released,
    load_released_images,
    load_released_model,
    md5sum,
)
from lwta_utils.models.registry import build_model
from lwta_utils.models.released import released_key_map, released_model_config

R = ReleasedConfig()
ROOT = resolve(R.root)
HAVE_FILES = (ROOT / R.checkpoint).is_file() and (ROOT / R.images).is_file()
needs_files = pytest.mark.skipif(not HAVE_FILES, reason=f"the released files are not in {R.root}/ (a clone "
                                                         "without ../shared/released)")
INFO = DATASETS.lookup("data.name", "cifar10")[1]


# -- a plain restatement of the authors' WideResNet-34-1 with stochastic LWTA -------------------------


class PlainLWTA(nn.Module):
    """Pairs of adjacent channels compete at every position: mask = softmax((h + G) / 0.01) over the
    pair (G Gumbel noise), output h * mask; with ``masks`` set, the next given mask instead."""

    def __init__(self):
        super().__init__()
        self.temp = nn.Parameter(torch.tensor(-0.01))  # the learned training temperature (unused at test)
        self.masks = None

    def forward(self, h):
        b, c, hh, ww = h.shape
        logits = h.reshape(b, c // 2, 2, hh, ww)
        if self.masks is not None:
            mask = next(self.masks)
        else:
            u = torch.rand_like(logits)
            mask = torch.softmax((logits - torch.log(-torch.log(u + 1e-8) + 1e-8)) / 0.01, dim=2)
        return (logits * mask).reshape(b, c, hh, ww)


class PlainBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.bn1, self.lwta1 = nn.BatchNorm2d(c_in), PlainLWTA()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn2, self.lwta2 = nn.BatchNorm2d(c_out), PlainLWTA()
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.equal = c_in == c_out
        self.convShortcut = None if self.equal else nn.Conv2d(c_in, c_out, 1, stride, 0, bias=False)

    def forward(self, x):
        if self.equal:
            out = self.lwta1(self.bn1(x))
        else:
            x = self.lwta1(self.bn1(x))
            out = x
        out = self.conv2(self.lwta2(self.bn2(self.conv1(out))))
        return (x if self.equal else self.convShortcut(x)) + out


class PlainGroup(nn.Module):
    def __init__(self, n, c_in, c_out, stride):
        super().__init__()
        self.layer = nn.Sequential(*[PlainBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1)
                                     for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class PlainWRN(nn.Module):
    def __init__(self, depth=34, k=1):
        super().__init__()
        n, ch = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        self.conv1 = nn.Conv2d(3, ch[0], 3, 1, 1, bias=False)
        self.block1 = PlainGroup(n, ch[0], ch[1], 1)
        self.sub_block1 = PlainGroup(n, ch[0], ch[1], 1)  # built, never called
        self.block2 = PlainGroup(n, ch[1], ch[2], 2)
        self.block3 = PlainGroup(n, ch[2], ch[3], 2)
        self.bn1, self.lwta, self.fc = nn.BatchNorm2d(ch[3]), PlainLWTA(), nn.Linear(ch[3], 10)

    def forward(self, x, masks=None):
        it = iter(masks) if masks is not None else None
        for m in self.modules():
            if isinstance(m, PlainLWTA):
                m.masks = it
        out = self.block3(self.block2(self.block1(self.conv1(x))))
        out = F.avg_pool2d(self.lwta(self.bn1(out)), 8)
        return self.fc(out.flatten(1))


# -- helpers ------------------------------------------------------------------------------------------


def random_project_model(seed=0):
    torch.manual_seed(seed)
    model = build_model(released_model_config(), INFO)
    with torch.no_grad():  # non-trivial BatchNorm statistics and temperatures
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_(1, 0.2)
                m.bias.normal_(0, 0.1)
        for layer in lwta_layers(model):
            layer.t.normal_(0.5, 0.3)
    return model


def authors_state(model):
    """The project's model's weights under the authors' keys, with a sub_block1 as their file has."""
    plain = PlainWRN()
    state = dict(plain.state_dict())
    ours = model.state_dict()
    for key, theirs in released_key_map(model).items():
        state[theirs] = ours[key].clone()
    return state


def frozen_logits(model, x, seed=0):
    """The project's logits of one stochastic pass (eval mode, test temperature, sampling on) and the
    winner masks it drew, in forward order."""
    torch.manual_seed(seed)
    with eval_mode(model), switches(model, phase="test", stochastic=True, test_mode="sample", keep_mask=True), \
            torch.no_grad():
        logits = model(x)
        masks = [layer.last_mask.clone() for layer in lwta_layers(model)]
    return logits, masks


def save_state(tmp_path, state, name="ckpt.pt"):
    path = tmp_path / name
    torch.save({"model_state_dict": state, "epoch": 100}, path)
    return path, md5sum(path)


def test_key_map_covers_every_tensor_the_forward_pass_uses():
    model = build_model(released_model_config(), INFO)
    key_map = released_key_map(model)
    plain = PlainWRN().state_dict()
    assert set(key_map) == set(model.state_dict())  # every tensor of the project's model has a source
    assert len(set(key_map.values())) == len(key_map)  # no tensor is used twice
    assert set(key_map.values()) <= set(plain)
    unused = set(plain) - set(key_map.values())
    assert unused and all(k.startswith("sub_block1.") for k in unused)  # exactly the block never called
    for ours, theirs in key_map.items():
        assert tuple(model.state_dict()[ours].shape) == tuple(plain[theirs].shape), ours
    assert key_map["net.2.act1.t"] == "block1.layer.0.lwta1.temp"
    assert sum(v.endswith(".temp") for v in key_map.values()) == 31  # 2 x 15 blocks + the final LWTA


def test_frozen_masks_give_the_authors_logits(tmp_path):
    model = random_project_model()
    path, md5 = save_state(tmp_path, authors_state(model))
    loaded, report = load_released_model(path, md5, INFO)  # through the strict loader
    assert len(report["ignored"]) == len([k for k in PlainWRN().state_dict() if k.startswith("sub_block1.")])
    plain = PlainWRN().eval()
    plain.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["model_state_dict"], strict=True)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    logits, masks = frozen_logits(loaded, x)
    with torch.no_grad():
        theirs = plain(x, masks)
    assert (logits - theirs).abs().max() < 1e-5
    other, _ = frozen_logits(loaded, x, seed=1)  # other masks: other logits (the masks matter)
    assert (other - logits).abs().max() > 1e-3


@needs_files
def test_released_weights_load_strictly_and_match_the_authors_forward():
    model, report = load_released_model(ROOT / R.checkpoint, R.checkpoint_md5, INFO)
    state = torch.load(ROOT / R.checkpoint, map_location="cpu", weights_only=True)["model_state_dict"]
    for ours, theirs in released_key_map(model).items():  # every tensor the forward pass uses is the file's
        assert torch.equal(model.state_dict()[ours], state[theirs]), ours
    assert report["loaded"] == len(model.state_dict())
    assert sorted(report["ignored"]) == sorted(k for k in state if k.startswith("sub_block1."))
    assert len(report["ignored"]) == 70 and "sub_block1" in report["message"]
    assert (report["depth"], report["widen_factor"], report["epoch"]) == (34, 1, 100)
    plain = PlainWRN().eval()
    plain.load_state_dict(state, strict=True)  # the authors' own strict load, sub_block1 included
    with np.load(ROOT / R.images) as d:
        x = torch.as_tensor(d["x"][:4]).float() / 255
    logits, masks = frozen_logits(model, x)
    with torch.no_grad():
        theirs = plain(x, masks)
    assert (logits - theirs).abs().max() < 1e-5


def test_missing_file_is_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist") as exc:
        load_released_model(tmp_path / "nope.pt", R.checkpoint_md5, INFO)
    assert str(tmp_path / "nope.pt") in str(exc.value) and "\n" not in str(exc.value)


def test_another_file_is_one_clear_error(tmp_path):
    path, md5 = save_state(tmp_path, authors_state(build_model(released_model_config(), INFO)))
    with pytest.raises(ConfigError, match=f"another file: md5 {md5}, expected {'0' * 32}"):
        load_released_model(path, "0" * 32, INFO)


@pytest.mark.parametrize("change, needle", [
    ("shape", "1 shape (fc.weight: (10, 32) in the file vs (10, 64) in the model)"),
    ("missing", "1 missing (block2.layer.0.convShortcut.weight)"),
    ("unexpected", "1 unexpected (block4.layer.0.conv1.weight)"),
])
def test_a_tensor_that_does_not_fit_is_one_clear_error(tmp_path, change, needle):
    state = authors_state(build_model(released_model_config(), INFO))
    if change == "shape":
        state["fc.weight"] = torch.zeros(10, 32)
    elif change == "missing":
        del state["block2.layer.0.convShortcut.weight"]
    else:
        state["block4.layer.0.conv1.weight"] = torch.zeros(1)
    path, md5 = save_state(tmp_path, state)
    with pytest.raises(ConfigError, match="does not fit") as exc:
        load_released_model(path, md5, INFO)
    assert needle in str(exc.value)


def test_files_found_nowhere_skip_with_one_message_saying_where(tmp_path):
    r = ReleasedConfig(root=str(tmp_path / "shared"), fetch_root=str(tmp_path / "data"), fetch=False)
    with pytest.raises(ReleasedUnavailable) as exc:
        find_released(r)
    text = str(exc.value)
    assert "\n" not in text
    for part in (R.checkpoint, R.checkpoint_md5, R.images, R.images_md5, str(tmp_path / "shared"),
                 str(tmp_path / "data"), "cifar-10-batches-py"):
        assert part in text


def test_the_step_skips_without_the_files_and_writes_nothing(tmp_path, capsys):
    from lwta_utils.pipeline.released import released_checkpoint

    cfg = load_config("smoke", out_dir=str(tmp_path / "out"), overrides={
        "released.root": str(tmp_path / "shared"), "released.fetch_root": str(tmp_path / "data"),
        "released.fetch": False})
    assert released_checkpoint(cfg) is None
    lines = [ln for ln in capsys.readouterr().out.splitlines() if ln]
    assert len(lines) == 1 and lines[0].startswith("Skipped:") and R.checkpoint in lines[0]
    assert not (tmp_path / "out").exists()


def test_fetch_checks_the_md5(tmp_path):
    src, md5 = save_state(tmp_path, {"fc.bias": torch.zeros(10)}, "remote.pt")
    r = ReleasedConfig(root=str(tmp_path / "shared"), fetch_root=str(tmp_path / "data"),
                       checkpoint_url=src.as_uri(), checkpoint_md5=md5, fetch=True)
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / R.images, x=np.zeros((1, 3, 32, 32), np.uint8), y=np.zeros(1, np.int64))
    with pytest.raises(ConfigError, match="another file"):  # the fetched checkpoint is fine, the images are not
        find_released(r)
    assert md5sum(tmp_path / "data" / R.checkpoint) == md5
    (tmp_path / "data" / R.checkpoint).unlink()
    bad = dataclasses.replace(r, checkpoint_md5="f" * 32)
    with pytest.raises(ReleasedUnavailable, match=f"gave a file of md5 {md5}"):
        find_released(bad)
    assert not (tmp_path / "data" / R.checkpoint).exists()  # a file of another md5 is not kept
    offline = dataclasses.replace(r, checkpoint_url=(tmp_path / "absent.pt").as_uri())
    with pytest.raises(ReleasedUnavailable, match="cannot fetch"):
        find_released(offline)


@needs_files
def test_images_from_the_npz_and_from_the_cifar10_reader_agree(tmp_path):
    files = find_released(dataclasses.replace(R, fetch=False))
    x, y = load_released_images(files, dataclasses.replace(R, n_images=1000))
    assert x.shape == (1000, 3, 32, 32) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    with np.load(ROOT / R.images) as d:
        raw_x, raw_y = d["x"], d["y"]
    folder = tmp_path / "cifar-10-batches-py"  # the python batches, as torchvision writes them
    folder.mkdir()
    for name, (bx, by) in {"test_batch": (raw_x, raw_y), **{f"data_batch_{i}": (raw_x[:2], raw_y[:2])
                                                              for i in range(1, 6)}}.items():
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": bx.reshape(len(bx), -1), b"labels": list(map(int, by))}, fh)
    via_reader = ReleasedFiles(files.checkpoint, None, tmp_path)
    x2, y2 = load_released_images(via_reader, dataclasses.replace(R, n_images=10))
    assert torch.equal(x2, x[:10]) and torch.equal(y2, y[:10])
    with open(folder / "test_batch", "wb") as fh:  # altered pixels: another file
        pickle.dump({b"data": (raw_x[::-1]).reshape(1000, -1), b"labels": list(map(int, raw_y))}, fh)
    with pytest.raises(ConfigError, match="another file"):
        load_released_images(via_reader, R)


@pytest.mark.parametrize("key, value, needle", [
    ("released.checkpoint_md5", "xyz", "32 lower-case hex digits"),
    ("released.n_images", 2000, "released.n_images"),
    ("released.attacks", [{"name": "transfer", "eps": [0.03], "surrogate": "relu_pgdat"}], "surrogate model"),
    ("released.attacks", [{"name": "pgd_linf", "id": "pgd20_authors", "eps": [0.03]}], "ids must be unique"),
    ("released.reported", {"none": 186.56}, "released.reported.none"),
    ("released.name", "relu_std", "is a model of the profile"),
    ("released.authors_attack", {"steps": 5}, "gives it in full"),
])
def test_bad_settings_are_one_clear_error(key, value, needle):
    with pytest.raises(ConfigError, match=needle):
        load_config("smoke", overrides={key: value})


@needs_files
def test_the_step_writes_records_and_reuses_them(tmp_path, capsys):
    from lwta_utils.pipeline.released import released_checkpoint

    authors = {"name": "pgd_linf", "id": "pgd20_authors", "eps": [8 / 255], "steps": 2, "step_size": 2 / 255}
    cfg = load_config("smoke", out_dir=str(tmp_path), overrides={
        "released.n_images": 4, "released.batch_size": 4, "released.draws": 2, "released.attack_draws": 1,
        "released.n_gradients": 2, "released.n_saved_examples": 2, "released.authors_attack": authors,
        "released.attacks": [{"name": "pgd_linf", "id": "pgd20_st", "eps": [8 / 255], "steps": 2,
                              "step_size": 2 / 255, "gradient": "straight_through"}],
        "released.cascade": ["pgd20_st"]})  # the adaptive cascade's hook (a one-step cascade)
    summary = released_checkpoint(cfg)
    from lwta_utils.core.jsonfiles import read_versioned
    payload = read_versioned(tmp_path / "results" / f"eval_{R.name}.json", "evaluation")
    recs = {r["attack"]: r for r in payload["records"]}
    assert set(recs) == {"none", "pgd20_authors", "pgd20_st", "worst_case"}
    assert all(r["dataset"] == "cifar10" and r["split"] == "test (first 4)" for r in recs.values())
    assert recs["none"]["draws"] == 2 and recs["pgd20_st"]["draws"] == 1
    assert recs["pgd20_authors"]["cascade_step"] == 0 and recs["pgd20_st"]["cascade_step"] == 1
    assert payload["config_hash"] == summary["config_hash"]
    assert [g["gradient"] for g in summary["gradients"]] == ["relaxed", "straight_through"]
    assert summary["loading"]["n_ignored"] == 70 and summary["loading"]["ignored_prefixes"] == ["sub_block1"]
    for stem in ("sanity", "probs", "correct", "examples"):
        assert (tmp_path / "results" / f"{stem}_{R.name}.{'json' if stem == 'sanity' else 'npz'}").is_file()
    capsys.readouterr()
    again = released_checkpoint(cfg)
    assert "reusing" in capsys.readouterr().out and again["config_hash"] == summary["config_hash"]
    changed = dataclasses.replace(cfg.released, attack_draws=2)
    from lwta_utils.evaluation.released import released_hash
    assert released_hash(cfg.released, cfg.seed, cfg.eval.sanity, cfg.eval.confirm_draws) == summary["config_hash"]
    assert released_hash(changed, cfg.seed, cfg.eval.sanity, cfg.eval.confirm_draws) != summary["config_hash"]
    assert released_hash(cfg.released, cfg.seed, cfg.eval.sanity, cfg.eval.confirm_draws + 1) != summary["config_hash"]


def test_state_dict_restatement_round_trips_through_a_file():
    buf = io.BytesIO()
    torch.save({"model_state_dict": PlainWRN().state_dict()}, buf)
    assert len(torch.load(io.BytesIO(buf.getvalue()), weights_only=True)["model_state_dict"]) == 291


def test_default_profile_holds_the_authors_attack():
    atk = load_config("default").released.authors_attack
    assert (atk.name, atk.steps, atk.random_start, atk.gradient) == ("pgd_linf", 20, True, "model")
    assert np.isclose(atk.eps[0], 8 / 255) and np.isclose(atk.step_size, 2 / 255)
    assert isinstance(atk, AttackConfig)
