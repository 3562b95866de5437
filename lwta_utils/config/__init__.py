"""The configuration: the schema (every hyperparameter with its unit and default), loading a
profile with overrides, validation, and short descriptions for tables."""
from lwta_utils.config.describe import training_name
from lwta_utils.config.loading import available_profiles, from_dict, load_config, load_profile_dict, parse_set
from lwta_utils.config.schema import (
    CHAIN,
    AdversarialConfig,
    AttackConfig,
    ComputeConfig,
    DataConfig,
    EvalConfig,
    GammaScheduleConfig,
    ModelConfig,
    ProbeConfig,
    ReportConfig,
    SanityConfig,
    StudyConfig,
    TrainConfig,
)
from lwta_utils.config.validation import validate, validate_attack, validate_compute, validate_train

__all__ = ["CHAIN", "AdversarialConfig", "AttackConfig", "ComputeConfig", "DataConfig", "EvalConfig",
           "GammaScheduleConfig", "ModelConfig", "ProbeConfig", "ReportConfig", "SanityConfig", "StudyConfig",
           "TrainConfig", "available_profiles", "from_dict", "load_config", "load_profile_dict", "parse_set",
           "training_name", "validate", "validate_attack", "validate_compute", "validate_train"]
