"""Seeded per-class samples of a training split: label fractions, k images a class, and the
k-shot settings (``shots``) that any fit-and-score protocol can ask the pipeline for.

A protocol whose config has ``shots`` (e.g. ``(1, 10, "all")``) and ``shot_seeds`` fields passes
them on in its :class:`~jepa_eval.protocols.registry.Needs`; the pipeline then evaluates it once per
setting and seed on that draw of the training split (``"all"``: the whole split, once) and marks
each metric row with the coordinates ``shots`` and ``seed`` (none for ``"all"``). Draw ``s`` of k
shots is :func:`sample_shots` with seed ``s``, the draw low-shot's k-shot setting uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NoReturn

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols.registry import Spelling, option

ALL_SHOTS = "all"  # the shots setting of the whole training split


def round_half_up(x: np.ndarray) -> np.ndarray:
    return np.floor(x + 0.5).astype(np.int64)


def class_members(labels: np.ndarray) -> dict[int, np.ndarray]:
    """Indices of each class present in ``labels``, ascending."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.size == 0:
        raise JepaEvalError("labels must be a non-empty 1-D array", found=f"shape {labels.shape}")
    order = np.argsort(labels, kind="stable")
    classes, starts = np.unique(labels[order], return_index=True)
    return dict(zip(classes.tolist(), np.split(order, starts[1:])))


def _draw(members: dict[int, np.ndarray], counts: dict[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    picked = [rng.permutation(members[c])[:counts[c]] for c in sorted(members)]
    return np.sort(np.concatenate(picked))


def _describe_classes(sizes: dict[int, int], limit: int = 10) -> str:
    shown = ", ".join(f"class {c}: {n}" for c, n in list(sizes.items())[:limit])
    more = f" and {len(sizes) - limit} more" if len(sizes) > limit else ""
    return shown + more


def check_fraction(fraction: float) -> None:
    if not 0 < fraction <= 1:
        raise JepaEvalError("a label fraction is out of range", expected="a fraction in (0, 1]",
                            found=f"{fraction}")


def check_shots(shots: int) -> None:
    if shots < 1:
        raise JepaEvalError("the number of shots must be positive", expected="shots >= 1",
                            found=f"{shots}")


def sample_fraction(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted indices of ``round(fraction * n_c)`` seeded samples of each class c (half up).

    A fraction that rounds some class to zero samples is an error naming those classes.
    """
    check_fraction(fraction)
    members = class_members(labels)
    counts = {c: int(round_half_up(np.array(fraction * idx.size))) for c, idx in members.items()}
    empty = {c: members[c].size for c, n in counts.items() if n == 0}
    if empty:
        raise JepaEvalError(f"the fraction {fraction} leaves {len(empty)} classes without a sample",
                            expected="round(fraction x class size) >= 1 for every class",
                            found=f"class sizes {_describe_classes(empty)}",
                            hint="use a larger fraction or a k-shot setting")
    return _draw(members, counts, seed)


def sample_shots(labels: np.ndarray, shots: int, seed: int) -> np.ndarray:
    """Sorted indices of ``shots`` seeded samples of each class; a smaller class is an error."""
    check_shots(shots)
    members = class_members(labels)
    small = {c: idx.size for c, idx in members.items() if idx.size < shots}
    if small:
        raise JepaEvalError(f"{len(small)} classes have fewer than {shots} images",
                            expected=f"at least {shots} training images in every class",
                            found=f"class sizes {_describe_classes(small)}")
    return _draw(members, {c: shots for c in members}, seed)


def parse_shots(text: str) -> tuple[int | str, ...]:
    """'1,10,all' -> (1, 10, 'all'); '' -> () (the whole split, as without shots)."""
    values: list[int | str] = []
    for part in (piece.strip() for piece in text.split(",")):
        if part == ALL_SHOTS:
            values.append(part)
        elif part.isdigit():
            values.append(int(part))
        elif part:
            _bad_shots(text)
    return tuple(values)


def _bad_shots(values: Any) -> NoReturn:
    raise JepaEvalError("a shots setting is neither a positive number nor 'all'",
                        expected="images a class such as 1,10,all", found=repr(values))


def check_shot_settings(shots: tuple[Any, ...], seeds: int) -> None:
    """Refuse shots other than positive whole numbers and 'all', repeated settings, and seeds < 1."""
    if any(s != ALL_SHOTS and (isinstance(s, bool) or not isinstance(s, int) or s < 1) for s in shots):
        _bad_shots(list(shots))
    if len(set(shots)) != len(shots):
        raise JepaEvalError("a shots setting is repeated", expected="each setting once", found=repr(list(shots)))
    if seeds < 1:
        raise JepaEvalError("k-shot draws need at least one seed", expected="shot_seeds >= 1", found=str(seeds))


def shots_field() -> Any:
    """The ``shots`` config field of a protocol that supports k-shot draws (see the module docstring)."""
    return option((), "Images a class to fit on, comma-separated, 'all' for the whole training split "
                      "(e.g. 1,10,all); default: the whole split.",
                  spelling=Spelling(str, parse_shots, ""))


def shot_seeds_field(default: int = 5) -> Any:
    """The ``shot_seeds`` config field: seeded draws ``0 .. shot_seeds - 1`` of every k-shot setting."""
    return option(default, "Seeded draws of each k-shot setting.")


def shots_setting(coords: Mapping[str, Any]) -> str:
    """The table column of a k-shot row ('5-shot'); '' for the whole split."""
    return f"{int(coords['shots'])}-shot" if coords.get("shots") is not None else ""
