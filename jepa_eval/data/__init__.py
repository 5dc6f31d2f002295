"""Dataset registry, on-disk loaders and the standard evaluation transforms.

``build_dataset(name, split)`` returns a :class:`LabeledDataset`; ``get_spec(name)`` says which
splits a dataset has and which on-disk layout it reads. Names: cifar10, cifar100, imagenet,
inat2018, inat2021, places365, places205, digits (embedded, offline) and imagefolder:PATH.
"""

from jepa_eval.data.dataset import IMAGENET_MEAN, IMAGENET_STD, LabeledDataset, eval_transform, load_image
from jepa_eval.data.registry import DATA_ENV, DatasetSpec, build_dataset, get_spec, list_datasets, \
    resolve_root

__all__ = ["DATA_ENV", "IMAGENET_MEAN", "IMAGENET_STD", "DatasetSpec", "LabeledDataset", "build_dataset",
           "eval_transform", "get_spec", "list_datasets", "load_image", "resolve_root"]
