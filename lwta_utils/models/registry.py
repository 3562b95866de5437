"""The model registry: architectures chosen by name (``ModelConfig.arch``).

An architecture is a class ``cls(info, model_cfg)`` (``info``: the data set's
:class:`~lwta_utils.data.DataInfo`; ``model_cfg``: a :class:`~lwta_utils.config.ModelConfig`,
whose fields hold every option and its default). It registers itself in its own module with
``@register_model("name")``.
"""
from __future__ import annotations

from torch import nn

from lwta_utils.config.schema import ModelConfig
from lwta_utils.core.errors import bad
from lwta_utils.core.registry import MODELS


def register_model(name: str):
    def deco(cls):
        MODELS.add(name, cls)
        return cls
    return deco


def build_model(model_cfg: ModelConfig, info) -> nn.Module:
    """The model a ModelConfig describes, for inputs described by ``info``."""
    if not isinstance(model_cfg, ModelConfig):
        raise bad("model_cfg", type(model_cfg).__name__, "must be a ModelConfig")
    return MODELS.lookup("arch", model_cfg.arch)(info, model_cfg)
