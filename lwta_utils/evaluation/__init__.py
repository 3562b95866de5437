"""Evaluation: records with provenance, checkpoints, loading trained models, the robustness
evaluation of one model and its sanity checks."""
from lwta_utils.evaluation.checkpoints import load_checkpoint, save_checkpoint
from lwta_utils.evaluation.evaluate import evaluate_model
from lwta_utils.evaluation.loading import load_models, load_trained
from lwta_utils.evaluation.records import Record, load_records, write_records

__all__ = ["Record", "evaluate_model", "load_checkpoint", "load_models", "load_records", "load_trained",
           "save_checkpoint", "write_records"]
