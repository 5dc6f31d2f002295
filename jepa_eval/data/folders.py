"""Reading folders: ImageFolder trees, safe relative paths and short descriptions for errors."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from jepa_eval.core.errors import JepaEvalError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def is_image_name(name: str) -> bool:
    """True for a visible file name with an image extension (any case)."""
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def describe_folder(path: Path, limit: int = 6) -> str:
    """A short phrase saying what ``path`` holds: missing, a file, empty, or its first entries."""
    if not path.exists():
        return f"{path} does not exist"
    if not path.is_dir():
        return f"{path} is a file, not a folder"
    names = sorted(os.listdir(path))
    if not names:
        return f"{path} is empty"
    shown = ", ".join(n + "/" if (path / n).is_dir() else n for n in names[:limit])
    more = f", ... ({len(names)} entries)" if len(names) > limit else ""
    return f"{path} holds {shown}{more}"


def subfolders(path: Path) -> list[str]:
    """Sorted names of the visible sub-folders of ``path``."""
    return sorted(e.name for e in os.scandir(path) if e.is_dir() and not e.name.startswith("."))


def images_under(folder: Path) -> list[Path]:
    """Every image file below ``folder`` (recursively, symlinks followed), in sorted order."""
    found = []
    for current, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(Path(current) / f for f in sorted(files) if is_image_name(f))
    return found


def safe_relative(entry: str, base: Path, listing: Path) -> Path:
    """``base / entry`` for a path read from a list file, refusing any path that leaves ``base``.

    One leading ``/`` means "relative to ``base``", as in the official Places365 lists; a
    ``..`` component, a drive or a second leading slash is rejected with the list file named.
    """
    relative = entry[1:] if entry.startswith("/") else entry
    parts = PurePosixPath(relative).parts
    if not parts or relative.startswith("/") or ".." in parts or ":" in parts[0] or "\\" in relative:
        raise JepaEvalError(f"{listing} lists a path outside the dataset folder: {entry!r}",
                            expected=f"paths relative to {base} without '..' components",
                            found=repr(entry), hint="fix or regenerate the list file")
    return base.joinpath(*parts)


def read_image_folder(root: Path, split: str, *, class_split: str, layout: str
                      ) -> tuple[list[str], list[Path], list[int]]:
    """Classes, image paths and labels of the ImageFolder tree ``root/split/<class>/**/<image>``.

    Class indices follow the sorted class folders of ``root/class_split`` (the training split)
    when it exists, so that every split of one dataset numbers its classes the same way; a
    class folder in ``split`` that the training split lacks, a class folder without images and
    images lying loose beside the class folders are errors.
    """
    folder = root / split
    if not folder.is_dir():
        raise JepaEvalError(f"split {split!r} is missing", expected=layout, found=describe_folder(root))
    names = subfolders(folder)
    loose = [e.name for e in os.scandir(folder) if e.is_file() and is_image_name(e.name)]
    if loose or not names:
        raise JepaEvalError(f"{folder} is not sorted into one folder per class", expected=layout,
                            found=describe_folder(folder),
                            hint="ImageNet's val/ must first be sorted into its 1,000 wnid folders" if loose else None)
    reference = root / class_split
    classes = subfolders(reference) if reference.is_dir() else names
    extra = sorted(set(names) - set(classes))
    if extra:
        raise JepaEvalError(f"{folder} has class folders that {reference} lacks", expected=layout,
                            found=f"{len(extra)} extra: {', '.join(extra[:6])}")
    index = {name: i for i, name in enumerate(classes)}
    paths: list[Path] = []
    targets: list[int] = []
    for name in names:
        files = images_under(folder / name)
        if not files:
            raise JepaEvalError(f"class folder {name!r} of {folder} holds no image", expected=layout,
                                found=describe_folder(folder / name),
                                hint=f"image names end in one of {', '.join(IMAGE_EXTENSIONS)}")
        paths.extend(files)
        targets.extend([index[name]] * len(files))
    return classes, paths, targets
