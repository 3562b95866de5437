"""Data: the data set registry and loaders, the stratified split, training-time augmentation."""
from lwta_utils.core.registry import DATASETS
from lwta_utils.data.augment import augment_batch
from lwta_utils.data.datasets import DataInfo, register_dataset
from lwta_utils.data.splits import Splits, load_data, stratified_split

__all__ = ["DATASETS", "DataInfo", "Splits", "augment_batch", "load_data", "register_dataset", "stratified_split"]
