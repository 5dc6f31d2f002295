"""Run one protocol on one model and dataset: extract what it needs (cached), evaluate, record.

The protocol commands, ``transfer``, ``suite`` and ``monitor`` all run protocols through
:func:`run_protocol`, so a number means the same thing whichever command produced it. Records are
returned, not written.

Under ``torchrun`` every rank takes part in the extraction; rank 0 alone evaluates pooled
features and gets the record, the other ranks get None and go on to the next extraction. Inputs
that come as sources are evaluated by every rank, each on its share of every batch.

A protocol that asks for patch tokens gets token sources of both splits, from the token cache or
from the backbone in the loop; its record's feature mode names the token layout ('tokens4'). One
that asks for a ``stream`` gets sources of its mode's pooled features with the backbone in the
loop, training batches augmented.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, replace
from typing import Any

from jepa_eval.backbones.backbone import Backbone
from jepa_eval.core.devices import rank
from jepa_eval.data import get_spec
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.features.splits import (ExtractOptions, SplitFeatures, augmented_views, seeded_split_features,
                                       split_features, split_labels, subset_from_file)
from jepa_eval.features.stream import streamed_feature_splits, streamed_splits
from jepa_eval.features.token_splits import size_text, split_tokens
from jepa_eval.features.tokens import TokenLayout, TokenSplit, token_bytes
from jepa_eval.pipeline.shots import Draw, evaluate_draws, relative_to, rows_needed, shot_draws
from jepa_eval.protocols.registry import Inputs, Labelled, Needs, Protocol, TokensNeeded
from jepa_eval.results.record import DatasetInfo, FeatureInfo, ModelInfo, ResultRecord

Log = Callable[[str], Any]


def model_info(spec: ModelSpec, backbone: Backbone) -> ModelInfo:
    """The ``model`` block of a result record."""
    return ModelInfo(name=spec.display_name(), path=backbone.source, sha256=backbone.sha256, family=backbone.family,
                     ckpt_key=backbone.ckpt_key, arch=backbone.arch, **backbone.origin, notes=list(backbone.notes) or None)


def _labelled(part: SplitFeatures) -> Labelled:
    return Labelled(part.features.features, part.features.labels)


def _extract(backbone: Backbone, dataset: str, split: str, mode: str, options: ExtractOptions, needs: Needs,
             log: Log | None) -> tuple[SplitFeatures, int]:
    """Features of ``split`` (all rows, or ``needs.rows`` seeded ones) and the split's size."""
    if needs.rows is None:
        part = split_features(backbone, dataset, split, mode, options)
        total, shown = part.size, f"{part.size} x {part.features.features.shape[1]}"
    else:
        part, total = seeded_split_features(backbone, dataset, split, mode, options, needs.rows, needs.rows_seed)
        shown = f"{part.size} seeded rows"
    if log is not None:
        where = "reused from the feature cache" if part.cache_hit else "extracted"
        log(f"features {dataset}/{split} ({mode}): {shown} ({where})")
    return part, total


def _extract_shots(backbone: Backbone, dataset: str, split: str, mode: str, options: ExtractOptions, needs: Needs,
                   log: Log | None) -> tuple[SplitFeatures, int, list[Draw]]:
    """Features of the rows the k-shot draws of ``split`` use, the split's size and the draws."""
    labels = split_labels(dataset, split, options)
    draws = shot_draws(labels, needs)
    rows = rows_needed(draws, labels.size)
    part = split_features(backbone, dataset, split, mode, options, subset=rows)
    if log is not None:
        where = "reused from the feature cache" if part.cache_hit else "extracted"
        settings = ", ".join(str(s) for s in needs.shots)
        log(f"features {dataset}/{split} ({mode}): {part.size} of {labels.size} rows for the shots {settings} "
            f"({where})")
    return part, int(labels.size), relative_to(draws, rows)


def _tokens(backbone: Backbone, dataset: str, needs: TokensNeeded, options: ExtractOptions,
            log: Log | None) -> tuple[TokenSplit, TokenSplit, str]:
    """Token sources of the training and evaluation splits, and the layout's name."""
    layout = TokenLayout(needs.blocks, needs.pooling)
    data_spec = get_spec(dataset)
    if needs.augment == "none":
        parts = split_tokens(backbone, dataset, [data_spec.train_split, data_spec.eval_split], layout, options)
    else:
        parts = list(streamed_splits(backbone, dataset, layout, needs.augment, options))
    for part in parts:
        if needs.augment == "none":
            how = f"float16, {size_text(token_bytes(part.source.shape))}, " + (
                "reused from the feature cache" if part.cache_hit else "extracted")
        else:
            how = "backbone in the loop" + (f", training batches augmented ({needs.augment})"
                                            if part.split == data_spec.train_split else "")
        if log is not None:
            n, length, width = part.source.shape
            log(f"tokens {dataset}/{part.split} ({layout.name}): {n} x {length} x {width} ({how})")
    return parts[0], parts[1], layout.name


def distinct_modes(protocol: Protocol, config: Any, modes: list[str]) -> list[str]:
    """The feature modes that give ``protocol`` different inputs: the first alone for a protocol
    that reads patch tokens (the mode does not choose them)."""
    return modes[:1] if protocol.needs(config).tokens is not None else modes


def run_protocol(protocol: Protocol, config: Any, spec: ModelSpec, backbone: Backbone, dataset: str, mode: str,
                 options: ExtractOptions, *, split: str | None = None, log: Log | None = None) -> ResultRecord | None:
    """``protocol`` with ``config`` on ``backbone``'s ``mode`` features of ``dataset``.

    Protocols that fit and score use the dataset's training and evaluation splits; one-split
    protocols measure ``split`` (default: the training split). ``wall_time_s`` of the record is
    the time from extraction (or reading the cache) to the last number. None on torchrun ranks
    other than 0.
    """
    started = time.perf_counter()
    needs = protocol.needs(config)
    data_spec = get_spec(dataset)
    draws: list[Draw] = []  # k-shot draws of the training split, when the protocol asks for them
    device = None if options.device in (None, "auto") else options.device
    if needs.tokens is not None or needs.stream is not None:
        if needs.tokens is not None:
            train, test, mode = _tokens(backbone, dataset, needs.tokens, options, log)
        else:
            train, test = streamed_feature_splits(backbone, dataset, mode, needs.stream, options)
            if log is not None:
                log(f"features {dataset}/{train.split} and {test.split} ({mode}): the backbone in the loop, "
                    f"training batches augmented ({needs.stream})")
        inputs = Inputs(train=Labelled(train.source, train.source.labels),
                        eval=Labelled(test.source, test.source.labels), num_classes=train.num_classes,
                        device=device, progress=options.progress and rank() == 0)
        info = DatasetInfo(name=dataset, root=train.root, train_split=train.split, n_train=train.size,
                           num_classes=train.num_classes, eval_split=test.split, n_eval=test.size)
    elif protocol.splits == ("split",):
        measured = split or data_spec.train_split
        part, total = _extract(backbone, dataset, measured, mode, options, needs, log)
        views = None
        if needs.views is not None:
            views = augmented_views(backbone, dataset, measured, mode, options, images=needs.views.images,
                                    views=needs.views.views, seed=needs.views.seed)
        inputs = Inputs(train=_labelled(part), num_classes=part.num_classes, views=views, device=device,
                        progress=options.progress)
        info = DatasetInfo(name=dataset, root=part.root, split=measured, n_split=total)
    else:
        subset = None  # read first: a bad subset file fails before any extraction
        if needs.train_subset_file is not None:
            subset = subset_from_file(dataset, needs.train_subset_file, options)
        if needs.shots:
            train, n_train, draws = _extract_shots(backbone, dataset, data_spec.train_split, mode, options, needs, log)
        else:
            train, n_train = _extract(backbone, dataset, data_spec.train_split, mode, options, needs, log)
        test, _ = _extract(backbone, dataset, data_spec.eval_split, mode, options, needs, log)
        inputs = Inputs(train=_labelled(train), eval=_labelled(test), num_classes=train.num_classes,
                        train_subset=subset, device=device, progress=options.progress)
        info = DatasetInfo(name=dataset, root=train.root, train_split=train.split, n_train=n_train,
                           num_classes=train.num_classes, eval_split=test.split, n_eval=test.size)
    if rank() != 0 and needs.tokens is None and needs.stream is None:
        return None
    evaluation = evaluate_draws(protocol, config, inputs, draws) if draws else protocol.evaluate(inputs, config)
    if rank() != 0:
        return None
    return ResultRecord(protocol=protocol.name, protocol_version=protocol.version, model=model_info(spec, backbone),
                        dataset=replace(info, **evaluation.dataset),
                        features=FeatureInfo(mode=mode, image_size=backbone.image_size),
                        params={**asdict(config), **evaluation.params}, metrics=evaluation.metrics,
                        summary=evaluation.summary, wall_time_s=time.perf_counter() - started)
