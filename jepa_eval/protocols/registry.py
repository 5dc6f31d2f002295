"""The protocol registry: every protocol declares itself in its own module, in one place.

A :class:`Protocol` holds a protocol's name and version, its config dataclass (whose fields are
the ``params`` of a suite entry and, where marked with :func:`option`, the command-line options),
what features it needs (:class:`Needs`), its pure ``evaluate(inputs, config) -> Evaluation``, how
it is labelled in tables, captions and plots, and how ``transfer`` picks the best feature mode with
it. The suite runner, ``transfer``, ``monitor``, the CLI and the report look protocols up here;
none of them names a protocol.

Versions are bumped whenever a change could move the numbers a protocol reports; they are written
into every result record.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, field
from typing import Any

import numpy as np

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.features.tokens import TokenSource
from jepa_eval.results.record import Metric, ResultRecord

# ---------------------------------------------------------------------------- inputs and outputs


@dataclass(frozen=True)
class Labelled:
    """One split, one row per image: ``features`` float32 [N, D] and ``labels`` int64 [N].

    For a protocol whose :class:`Needs` asked for ``tokens``, ``features`` is a
    :class:`~jepa_eval.features.tokens.TokenSource` of the split's patch tokens [N, T, D']; for
    ``stream``, a source of its pooled features [N, D'] with the backbone in the loop.
    """

    features: np.ndarray | TokenSource
    labels: np.ndarray


@dataclass(frozen=True)
class ViewsNeeded:
    """LiDAR's surrogate classes: ``images`` seeded images of the split, ``views`` crops each."""

    images: int
    views: int
    seed: int


@dataclass(frozen=True)
class TokensNeeded:
    """Patch tokens instead of pooled features: those of the last ``blocks`` blocks after the final
    norm, combined by ``pooling`` ('concat' or 'mean'). ``augment`` 'none' reads them from the
    token cache; 'crop' or 'vjepa' runs the backbone on every batch, training batches augmented so."""

    blocks: int = 1
    pooling: str = "concat"
    augment: str = "none"


@dataclass(frozen=True)
class Needs:
    """What the pipeline extracts for one run of a protocol, as the config asks.

    ``rows``: only that many seeded rows of each split (``rows_seed``), all rows when None.
    ``views``: augmented views of the measured split (LiDAR). ``train_subset_file``: a published
    subset file naming the training images to use (e.g. ImageNet 1percent.txt). ``shots``: the
    protocol is evaluated once per k-shot draw of the training split (k images a class, seeds
    ``0 .. shot_seeds - 1``; ``'all'``: the whole split once), see :mod:`jepa_eval.protocols.sampling`;
    empty: once on the whole split. ``tokens``: token sources of both splits instead of pooled
    features (the feature mode then does not apply). ``stream``: an augmentation ('crop',
    'vjepa'): sources of the mode's pooled features computed by the backbone in the loop, training
    batches augmented so. With either, every torchrun process evaluates its share of every batch.
    """

    rows: int | None = None
    rows_seed: int = 0
    views: ViewsNeeded | None = None
    train_subset_file: str | None = None
    shots: tuple[int | str, ...] = ()
    shot_seeds: int = 1
    tokens: TokensNeeded | None = None
    stream: str | None = None


@dataclass(frozen=True)
class Inputs:
    """What a protocol evaluates: arrays only, no file or data loader.

    ``train``: the training split (or, for a one-split protocol, the measured split);
    ``eval``: the evaluation split (None for one-split protocols); ``num_classes``: of the dataset;
    ``views``: float32 [n images, q views, D] when :class:`Needs` asked for them;
    ``train_subset``: row indices into ``train`` named by the subset file; ``device``: where to
    compute (None = CUDA when available); ``progress``: show progress.
    """

    train: Labelled
    eval: Labelled | None = None
    num_classes: int | None = None
    views: np.ndarray | None = None
    train_subset: np.ndarray | None = None
    device: str | None = None
    progress: bool = True


@dataclass
class Evaluation:
    """What a protocol returns: every number as a :class:`Metric` row, a summary of the headline
    numbers, extra ``params`` recorded beside the config's fields (e.g. on which split a head was
    chosen) and extra ``dataset`` facts (e.g. the rows used)."""

    metrics: list[Metric]
    summary: dict[str, Any]
    params: dict[str, Any] = field(default_factory=dict)
    dataset: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- presentation


@dataclass(frozen=True)
class Shown:
    """What a table shows of one protocol, for its caption: the hyper-parameters of the records
    shown and the distinct values of each of their coordinates and fields (``k``, ``seed``, ``split``...)."""

    params: list[dict[str, Any]]
    values: Mapping[str, list[Any]]


@dataclass(frozen=True)
class Selection:
    """How ``transfer`` picks the best feature mode: ``score(summary)`` of a run's summary,
    computed on split ``on`` ('val': held out from train; 'eval': the evaluation split itself),
    recorded as ``by``."""

    score: Callable[[Mapping[str, Any]], float]
    on: str
    by: str


@dataclass(frozen=True)
class PlotSpec:
    """A figure of the report (a kind that :mod:`jepa_eval.report.plots` draws) and its options."""

    kind: str
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TableSpec:
    """A paper table of the report: file stem and metric. ``shared`` tables (top-1) gather every
    protocol that reports the metric, one column group per protocol and dataset."""

    stem: str
    metric: str
    shared: bool = False


def joined(values: Any) -> str:
    """Distinct values as text for a caption: '10/20/200' (sorted as text)."""
    return "/".join(str(v) for v in sorted(set(values), key=str))


# ---------------------------------------------------------------------------- the protocol


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol, as the suite, transfer, the CLI and the report see it.

    ``splits``: ``("train", "eval")`` for protocols that fit on the training split and score on
    the evaluation split, ``("split",)`` for label-free ones that measure one split (the CLI and
    suite entries then take ``split``). ``runs_on``: 'model' (a command, suite entries, transfer) or
    'run' (a training run's checkpoints: only its own command calls it). Under torchrun rank 0
    alone evaluates pooled features; inputs that come as sources (``tokens``, ``stream``) are
    evaluated by every rank, each on its share of every batch.
    ``table_coords`` fixes coordinates in paper tables (k-NN: ``{"k": 20}``); ``table_latest``
    keeps only the largest value of that coordinate per run (monitor: the last epoch).
    ``setting(coords)`` names a sub-column of a table ('1%', '5-shot'), ``caption(shown)`` the
    protocol's part of a table caption, ``describe(record)`` the title of the command's printed
    table (default: '<label> on <dataset> (<mode>)'); ``headline`` the summary keys a suite logs.
    """

    name: str
    version: str
    summary: str
    config: type
    evaluate: Callable[..., Evaluation]
    label: str
    caption: Callable[[Shown], str]
    needs: Callable[[Any], Needs] = field(default=lambda config: Needs())
    describe: Callable[[ResultRecord], str] | None = None
    splits: tuple[str, ...] = ("train", "eval")
    runs_on: str = "model"
    headline: tuple[str, ...] = ()
    table_coords: Mapping[str, Any] = field(default_factory=dict)
    table_latest: str | None = None
    setting: Callable[[Mapping[str, Any]], str] | None = None
    tables: tuple[TableSpec, ...] = ()
    plots: tuple[PlotSpec, ...] = ()
    transfer: Selection | None = None

    def title(self, record: ResultRecord) -> str:
        """The title of the table a command prints for ``record``."""
        if self.describe is not None:
            return self.describe(record)
        return f"{self.label} on {record.dataset.name} ({record.features.mode})"


_REGISTRY: dict[str, Protocol] = {}


def register(protocol: Protocol) -> Protocol:
    """Add ``protocol`` to the registry (its module does this once, at import)."""
    if protocol.name in _REGISTRY:
        raise ValueError(f"protocol {protocol.name!r} is registered twice")
    _REGISTRY[protocol.name] = protocol
    return protocol


def registered() -> dict[str, Protocol]:
    """The registry itself, in registration order (filled by :mod:`jepa_eval.protocols`)."""
    return _REGISTRY


# ---------------------------------------------------------------------------- config fields


@dataclass(frozen=True)
class Spelling:
    """How a command-line text becomes a config value, when the field's type does not say it:
    ``kind`` is what the option takes (str, bool...), ``parse`` maps it to the field's value and
    ``default`` is the option's default."""

    kind: type
    parse: Callable[[Any], Any]
    default: Any


@dataclass(frozen=True)
class CliOption:
    """A config field shown on the command line: ``--flag`` (default: the field name with dashes)."""

    help: str
    flag: str | None = None
    spelling: Spelling | None = None


def option(default: Any = MISSING, help: str = "", *, flag: str | None = None,
           spelling: Spelling | None = None) -> Any:
    """A config dataclass field that the protocol's command shows as an option.

    Tuples of numbers are spelled comma-separated (``--k 10,20``), booleans as ``--x/--no-x``.
    """
    return field(default=default, metadata={"cli": CliOption(help, flag, spelling)})


def build_config(config_cls: type, values: Mapping[str, Any], where: str) -> Any:
    """``config_cls(**values)`` with lists turned into tuples; unknown or invalid values are a
    :class:`JepaEvalError` naming ``where`` (e.g. the suite file and entry)."""
    from dataclasses import fields

    names = {f.name for f in fields(config_cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise JepaEvalError(f"{where}: unknown hyper-parameter {unknown[0]!r}",
                            expected=f"one of {', '.join(sorted(names))}", found=repr(unknown))
    try:
        return config_cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})
    except (TypeError, ValueError) as exc:
        raise JepaEvalError(f"{where}: invalid hyper-parameters", found=str(exc)) from exc
