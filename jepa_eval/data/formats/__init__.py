"""On-disk formats, one module per layout; importing this package registers their datasets.

Every reader turns a dataset root and a split into :class:`~jepa_eval.data.dataset.Samples`,
learning labels, class names and file names from folder names, list files or annotation files
only: no image is decoded until it is accessed.
"""

from jepa_eval.data.formats import cifar, digits, imagefolder, inat, places

__all__ = ["cifar", "digits", "imagefolder", "inat", "places"]
