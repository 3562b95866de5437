"""lwta_utils: all logic of the LWTA / local-competition robustness study.

Modules: config (every hyperparameter, validated), data, layers (activation
registry), lwta (the stochastic LWTA activation) with lwta_kernels, ibp (the
IBP / stick-breaking variant and KL terms), kwta, pni, wca, sparta (the other
defenses), adversarial (what a training step learns from), defense_stats,
switches (explicit randomness
switches), lwta_stats, models, train (one ``fit``), attacks (ours) and
attacks_external (foolbox, AutoAttack), evaluate, sanity (checks of an
evaluation), results (records
and provenance), checkpoints, tables and plots (from the records), claims (the
seeds' claims versus ours), report, pipeline (the headless chain),
study (the steps the notebooks call).
"""
from .config import StudyConfig, load_config
from .data import load_data
from .defense_stats import (gamma_schedule_table, kwta_layer_table, mixed_branch_table, noise_statistics,
                            pni_alpha_table, training_history_table, wca_table)
from .errors import ConfigError
from .lwta_stats import draw_statistics, gradient_statistics, lwta_config_table, lwta_model_names, winner_statistics
from .claims import claims_table, seed001_table
from .plots import (plot_adversarial_examples, plot_examples, plot_gradient_cosine, plot_overhead, plot_robustness_curves,
                    plot_training_curves, plot_true_class_probs, plot_winner_stats)
from .tables import accuracy_table, findings, headline_table, overhead_table, sanity_table, study_records
from .switches import set_switches, switches
from .study import data_summary, evaluate_all, setup, stage_models, train_stage

__version__ = "0.1.0"
__all__ = ["findings", "StudyConfig", "load_config", "load_data", "ConfigError", "accuracy_table", "plot_examples",
           "plot_robustness_curves", "plot_training_curves", "plot_true_class_probs", "study_records",
           "data_summary", "evaluate_all", "setup", "stage_models", "train_stage", "draw_statistics",
           "gradient_statistics", "lwta_config_table", "lwta_model_names", "winner_statistics", "plot_gradient_cosine",
           "plot_winner_stats", "set_switches", "switches", "gamma_schedule_table", "kwta_layer_table",
           "mixed_branch_table", "noise_statistics", "pni_alpha_table", "training_history_table", "wca_table",
           "headline_table", "sanity_table", "claims_table", "seed001_table", "plot_adversarial_examples",
           "plot_overhead", "overhead_table"]
