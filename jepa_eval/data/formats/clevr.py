"""CLEVR tasks read from torchvision's CLEVRClassification layout ``clevr/CLEVR_v1.0/``.

Images ``images/<split>/CLEVR_<split>_NNNNNN.png`` (sorted, as torchvision lists them) and the
scenes ``scenes/CLEVR_<split>_scenes.json``, matched by ``image_filename``. Only train and val
have scenes (CLEVR's test split has no labels), so val is the evaluation split, as in VTAB and
VISSL.

- ``clevr-count``: the number of objects, 3..10, as 8 classes "3".."10" (label = count - 3, as VTAB
  and VISSL number them; torchvision's CLEVRClassification gives the count itself).
- ``clevr-dist``: VTAB's closest_object_distance: d = min over objects of ``pixel_coords[2]`` (the
  depth coordinate), label k for t_k < d <= t_(k+1) with t = 0, 8, 8.5, 9, 9.5, 10, 100
  (6 classes), as task_adaptation's ``tf.reduce_max(tf.where(thrs - d < 0))`` and VISSL's
  ``bisect_left`` give it.

CLEVR is resized straight to S x S (no crop): a crop would cut objects off and change the count
or the closest object (VTAB and VISSL resize it straight).
"""

from __future__ import annotations

import bisect
import json
from pathlib import Path
from typing import Any

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.dataset import Samples
from jepa_eval.data.folders import is_image_name
from jepa_eval.data.registry import register_dataset
from jepa_eval.data.releases import dataset_folder, release_spec, require

FOLDER = "clevr/CLEVR_v1.0"
COUNTS = range(3, 11)
DEPTH_THRESHOLDS = (0.0, 8.0, 8.5, 9.0, 9.5, 10.0, 100.0)
DIST_CLASSES = [f"({low:g}, {high:g}]" for low, high in zip(DEPTH_THRESHOLDS, DEPTH_THRESHOLDS[1:])]


def _scene_objects(root: Path, split: str, layout: str) -> tuple[list[Path], list[list[dict[str, Any]]], Path]:
    """The sorted image files of ``split``, the object list of each from the scenes file, and that file."""
    folder = dataset_folder(root, FOLDER, layout)
    images = require(folder / "images" / split, "CLEVR image folder", layout, folder=True)
    scenes_path = require(folder / "scenes" / f"CLEVR_{split}_scenes.json", "CLEVR scenes file", layout)
    try:
        scenes = json.loads(scenes_path.read_text())["scenes"]
        objects = {scene["image_filename"]: scene["objects"] for scene in scenes}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JepaEvalError(f"cannot read the scenes of {scenes_path}",
                            expected=f"{{'scenes': [{{'image_filename', 'objects'}}, ...]}} ({layout})",
                            found=f"{type(exc).__name__}: {exc}") from exc
    files = sorted(path for path in images.iterdir() if is_image_name(path.name))
    missing = [path.name for path in files if not isinstance(objects.get(path.name), list)]
    if missing:
        raise JepaEvalError(f"{scenes_path} has no object list for {len(missing)} images of {images}",
                            expected=f"one scene per image ({layout})", found=f"none for {missing[0]}")
    return files, [objects[path.name] for path in files], scenes_path


def _samples(classes: list[str], targets: list[int], files: list[Path], title: str) -> Samples:
    where = files[0].parent if files else ""
    return Samples(classes, targets, [path.name for path in files], f"{title} {where}", paths=files)


def read_clevr_count(root: Path, split: str, layout: str) -> Samples:
    """CLEVR object counting: classes "3".."10", label = number of objects - 3."""
    files, objects, scenes_path = _scene_objects(root, split, layout)
    counts = [len(scene) for scene in objects]
    odd = next((count for count in counts if count not in COUNTS), None)
    if odd is not None:
        raise JepaEvalError(f"{scenes_path} has a scene with {odd} objects", expected=f"3 to 10 objects ({layout})",
                            found=f"{odd} objects")
    return _samples([str(c) for c in COUNTS], [c - COUNTS.start for c in counts], files,
                    "torchvision CLEVRClassification, count - 3")


def closest_depth_class(depth: float) -> int:
    """VTAB's class of the closest object's depth: k such that t_k < depth <= t_(k+1)."""
    return bisect.bisect_left(DEPTH_THRESHOLDS, depth) - 1


def read_clevr_dist(root: Path, split: str, layout: str) -> Samples:
    """CLEVR closest-object distance: 6 classes of min ``pixel_coords[2]`` (see the module docstring)."""
    files, objects, scenes_path = _scene_objects(root, split, layout)
    targets = []
    for path, scene in zip(files, objects):
        try:
            depth = min(float(obj["pixel_coords"][2]) for obj in scene)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise JepaEvalError(f"{scenes_path} has no object depths for {path.name}",
                                expected=f"objects with 'pixel_coords' [x, y, depth] ({layout})",
                                found=f"{type(exc).__name__}: {exc}") from exc
        if not DEPTH_THRESHOLDS[0] < depth <= DEPTH_THRESHOLDS[-1]:
            raise JepaEvalError(f"{scenes_path} gives {path.name} a closest depth outside VTAB's bins",
                                expected=f"0 < depth <= 100 ({layout})", found=f"depth {depth}")
        targets.append(closest_depth_class(depth))
    return _samples(list(DIST_CLASSES), targets, files, "CLEVR scenes, VTAB closest-object depth bins")


_LAYOUT = ("torchvision's CLEVRClassification layout: <root>/clevr/CLEVR_v1.0/images/{train,val}/*.png and "
           "scenes/CLEVR_{train,val}_scenes.json (CLEVR's test split has no scenes, so val is the evaluation "
           "split); --download uses torchvision; ")

register_dataset(release_spec(
    "clevr-count", FOLDER, ("train", "val"), "train", "val",
    _LAYOUT + "classes '3'..'10', label = number of objects - 3 (VTAB's numbering)", read_clevr_count,
    "CLEVRClassification", straight_resize=True))
register_dataset(release_spec(
    "clevr-dist", FOLDER, ("train", "val"), "train", "val",
    _LAYOUT + "6 classes of the closest object's depth d = min pixel_coords[2], t_k < d <= t_(k+1) with "
    "t = 0, 8, 8.5, 9, 9.5, 10, 100 (VTAB's closest_object_distance)", read_clevr_dist,
    "CLEVRClassification", straight_resize=True))
