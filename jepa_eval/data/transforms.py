"""The standard image transforms: ImageNet normalisation and the evaluation resize and crop."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from PIL import Image
from torchvision import transforms as T

from jepa_eval.core.errors import JepaEvalError

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize() -> T.Normalize:
    """ImageNet mean/std normalisation of a [3, H, W] tensor in 0..1."""
    return T.Normalize(IMAGENET_MEAN, IMAGENET_STD)


def resize_and_crop(image_size: int, *, straight_resize: bool = False) -> Callable[[Image.Image], torch.Tensor]:
    """PIL RGB -> normalised [3, S, S]: resize the short side to ``int(S * 256 / 224)`` (bicubic)
    and centre-crop ``S``; or, with ``straight_resize`` (small images: CIFAR, digits), resize
    straight to ``S x S`` (bicubic, no crop), as VISSL does for CIFAR."""
    if not isinstance(image_size, int) or isinstance(image_size, bool) or image_size <= 0:
        raise JepaEvalError("the image size must be a positive number of pixels",
                            expected="an int such as 224", found=repr(image_size))
    bicubic = T.InterpolationMode.BICUBIC
    if straight_resize:
        geometry: list[Any] = [T.Resize((image_size, image_size), interpolation=bicubic)]
    else:
        geometry = [T.Resize(int(image_size * 256 / 224), interpolation=bicubic), T.CenterCrop(image_size)]
    return T.Compose([*geometry, T.ToTensor(), normalize()])
