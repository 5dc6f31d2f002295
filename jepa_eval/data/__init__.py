"""Datasets: the registry of names, the on-disk readers of each layout, and the standard transforms.

``build_dataset(name, split)`` returns a :class:`LabeledDataset`; ``get_spec(name)`` says which
splits a dataset has and which on-disk layout it reads; ``list_datasets()`` names them all.
"""

from jepa_eval.data import formats  # registers every dataset of every layout
from jepa_eval.data.dataset import LabeledDataset, load_image
from jepa_eval.data.registry import (DATA_ENV, DatasetSpec, build_dataset, eval_transform, get_spec, list_datasets,
                                     resolve_root)
from jepa_eval.data.transforms import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["DATA_ENV", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetSpec", "LabeledDataset", "build_dataset",
           "eval_transform", "formats", "get_spec", "list_datasets", "load_image", "resolve_root"]
