"""lwta_utils: all logic of the LWTA / local-competition robustness study.

Layers, each importing only from those above it in this list (``ARCHITECTURE.md``):

- ``core``: errors, paths, atomic files, runtime, randomness switches, modes, provenance,
  statistics, data-parallel helpers, the registries;
- ``config``: the schema (every hyperparameter with its unit and default), loading, validation;
- ``data``: data sets, the stratified split, augmentation;
- ``defenses``: the activation registry, stochastic LWTA and its kernels, IBP, k-WTA, PNI, WCA, Sparta;
- ``models``: the architectures and batched inference;
- ``attacks``: the attack registry and ``run_attack``, then one module per family;
- ``training``: the inputs of a training step and one ``fit``;
- ``evaluation``: records, checkpoints, model loading, the robustness evaluation, sanity checks;
- ``analysis``: record queries, tables, claims, findings, figures, probes of the defenses;
- ``pipeline``: the steps the notebooks call, the chain, the report, the command lines.

The notebooks import this package as ``lu`` and call the names below.
"""
from lwta_utils import (  # noqa: F401  # noqa: F401
                                                attacks,
                                                config,
                                                core,  # noqa: F401  (the layers in order: every registry is filled on import)
                                                data,
                                                defenses,
                                                evaluation,  # noqa: F401
                                                models,
                                                training,
)
from lwta_utils.analysis.claims import claims_table, seed001_table
from lwta_utils.analysis.defense_probes import (
                                                gamma_schedule_table,
                                                kwta_layer_table,
                                                mixed_branch_table,
                                                noise_statistics,
                                                pni_alpha_table,
                                                training_history_table,
                                                wca_table,
)
from lwta_utils.analysis.figures import (
                                                plot_adversarial_examples,
                                                plot_examples,
                                                plot_gradient_cosine,
                                                plot_overhead,
                                                plot_robustness_curves,
                                                plot_training_curves,
                                                plot_true_class_probs,
                                                plot_winner_stats,
)
from lwta_utils.analysis.findings import findings
from lwta_utils.analysis.headline import headline_frame, plot_headline
from lwta_utils.analysis.ibp_probes import (
                                                ibp_compression,
                                                ibp_layer_table,
                                                ibp_model_names,
                                                ibp_summary_table,
                                                ibp_threshold_table,
                                                plot_stick_breaking,
)
from lwta_utils.analysis.lwta_probes import (
                                                draw_statistics,
                                                gradient_statistics,
                                                lwta_config_table,
                                                lwta_model_names,
                                                winner_statistics,
)
from lwta_utils.analysis.queries import study_records
from lwta_utils.analysis.released import (
                                                plot_released_curves,
                                                plot_released_examples,
                                                plot_released_probs,
                                                released_authors_table,
                                                released_gradient_table,
                                                released_sanity_table,
                                                released_table,
                                                released_timing_table,
)
from lwta_utils.analysis.robustbench import robustbench
from lwta_utils.analysis.sources import references
from lwta_utils.analysis.tables import (accuracy_table, cascade_table, comparisons_table, headline_table,
                                        overhead_table, sanity_table, seeds_table)
from lwta_utils.config import StudyConfig, load_config
from lwta_utils.core.errors import ConfigError
from lwta_utils.core.switches import set_switches, switches
from lwta_utils.data import load_data
from lwta_utils.pipeline.released import released_checkpoint
from lwta_utils.pipeline.steps import data_summary, evaluate_all, setup, stage_models, train_stage

__version__ = "0.1.0"
__all__ = ["released_checkpoint", "released_table", "released_authors_table", "released_gradient_table",
           "released_sanity_table", "released_timing_table", "plot_released_curves", "plot_released_probs",
           "plot_released_examples", "findings", "StudyConfig", "load_config", "load_data", "ConfigError", "accuracy_table", "plot_examples",
           "plot_robustness_curves", "plot_training_curves", "plot_true_class_probs", "study_records",
           "data_summary", "evaluate_all", "setup", "stage_models", "train_stage", "draw_statistics",
           "gradient_statistics", "lwta_config_table", "lwta_model_names", "winner_statistics", "plot_gradient_cosine",
           "plot_winner_stats", "set_switches", "switches", "gamma_schedule_table", "kwta_layer_table",
           "mixed_branch_table", "noise_statistics", "pni_alpha_table", "training_history_table", "wca_table",
           "headline_table", "sanity_table", "claims_table", "seed001_table", "plot_adversarial_examples",
           "plot_overhead", "overhead_table", "cascade_table", "comparisons_table", "seeds_table", "ibp_compression", "ibp_layer_table", "ibp_model_names",
           "ibp_summary_table", "ibp_threshold_table", "plot_stick_breaking", "plot_headline", "headline_frame",
           "robustbench", "references"]
