"""On-disk formats, one module per layout; importing this package registers their datasets.

Every reader turns a dataset root and a split into :class:`~jepa_eval.data.dataset.Samples`,
learning labels, class names and file names from folder names, list files or annotation files
only: no image is decoded until it is accessed. The transfer datasets in torchvision's layouts
(flowers102 ... clevr) share :mod:`jepa_eval.data.releases`.
"""

from jepa_eval.data.formats import (aircraft, caltech, cars, cifar, clevr, digits, dtd, eurosat, flowers, food,
                                    imagefolder, inat, pets, places, stl10, sun397)

__all__ = ["aircraft", "caltech", "cars", "cifar", "clevr", "digits", "dtd", "eurosat", "flowers", "food",
           "imagefolder", "inat", "pets", "places", "stl10", "sun397"]
