"""One command per registered protocol: load, extract what it needs (cached), evaluate, write one record.

A command's own options are the :func:`~jepa_eval.protocols.registry.option` fields of its
protocol's config dataclass (tuples of numbers spelled comma-separated, booleans as
``--x/--no-x``), beside the shared model, extraction and result options; a protocol that measures
one split also takes ``--split``. A field named ``seed`` without an option of its own takes ``--seed``.
A protocol that reads patch tokens has no ``--mode`` (its config says which tokens).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Annotated, Any

import typer

from jepa_eval.cli import options as c
from jepa_eval.features.splits import resolve_mode
from jepa_eval.pipeline.evaluate import run_protocol
from jepa_eval.protocols import list_protocols
from jepa_eval.protocols.registry import CliOption, Protocol

SplitOpt = Annotated[str | None, typer.Option("--split", help="Split to measure (default: the training split).")]


def _numbers(kind: type) -> Callable[[str], tuple[Any, ...]]:
    return lambda text: tuple(kind(part) for part in text.split(",") if part.strip())


def _spelled(name: str, hint: Any, default: Any, cli: CliOption) -> tuple[Any, Any, Callable[[Any], Any], str]:
    """(option type, option default, text -> field value, flag spelling) of one config field."""
    flag = cli.flag or "--" + name.replace("_", "-")
    if cli.spelling is not None:
        return cli.spelling.kind, cli.spelling.default, cli.spelling.parse, flag
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        return str, ",".join(str(v) for v in default), _numbers(args[0]), flag
    if hint is bool:
        return bool, default, bool, flag if "/" in flag else f"{flag}/--no-{flag.removeprefix('--')}"
    return hint, default, lambda value: value, flag


def config_options(protocol: Protocol) -> tuple[list[inspect.Parameter], dict[str, Callable[[Any], Any]]]:
    """The command-line parameters of the config's option fields and each one's parser."""
    hints = typing.get_type_hints(protocol.config)
    params, parsers = [], {}
    for f in fields(protocol.config):
        cli = f.metadata.get("cli")
        if cli is None:
            continue
        default = f.default if f.default is not MISSING else f.default_factory()  # type: ignore[misc]
        kind, shown, parse, flag = _spelled(f.name, hints[f.name], default, cli)
        annotation = Annotated[kind, typer.Option(flag, help=cli.help)]
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=shown, annotation=annotation))
        parsers[f.name] = parse
    return params, parsers


def config_from_options(protocol: Protocol, parsers: dict[str, Callable[[Any], Any]], values: dict[str, Any],
                        shared: c.Shared) -> Any:
    """The protocol's config from its options' values (and ``--seed`` for a ``seed`` field without one)."""
    chosen = {name: parsers[name](value) for name, value in values.items()}
    if "seed" in {f.name for f in fields(protocol.config)} and "seed" not in chosen:
        chosen["seed"] = shared.seed
    return protocol.config(**chosen)


def protocol_command(protocol: Protocol) -> Callable[..., None]:
    """The Typer command of ``protocol``, named after it."""
    own, parsers = config_options(protocol)
    fixed = [inspect.Parameter("ckpt", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=c.CkptOpt),
             inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="digits", annotation=c.DataOpt)]
    if protocol.splits == ("split",):
        fixed.append(inspect.Parameter("split", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None,
                                       annotation=SplitOpt))

    def command(ckpt: str, data: str, split: str | None = None, *, shared: c.Shared, **values: Any) -> None:
        evaluate(protocol, config_from_options(protocol, parsers, values, shared), ckpt, data, split, shared)

    command.__name__ = protocol.name
    command.__doc__ = protocol.summary[0].upper() + protocol.summary[1:] + "."
    shared_param = inspect.Parameter("shared", inspect.Parameter.KEYWORD_ONLY, annotation=c.Shared)
    command.__signature__ = inspect.Signature([*fixed, *own, shared_param])  # type: ignore[attr-defined]
    reads_tokens = protocol.needs(protocol.config()).tokens is not None
    groups = ("model", "extract", "results", "json") if reads_tokens else ("model", "extract", "mode", "results", "json")
    return c.shared_options(*groups)(command)


def evaluate(protocol: Protocol, config: Any, ckpt: str, data: str, split: str | None, shared: c.Shared) -> None:
    """Load the model, run ``protocol``, then write and print its record."""
    spec = shared.spec(ckpt)
    backbone = spec.load()
    c.console.print(f"model: {backbone.describe()}")
    mode = resolve_mode(backbone, shared.values.get("mode"))
    record = run_protocol(protocol, config, spec, backbone, data, mode, shared.options, split=split,
                          log=c.console.print)
    if record is not None:  # None on torchrun's helper ranks: rank 0 writes
        c.finish(record, shared.results_dir, shared.json_out, protocol.title(record))


def commands() -> list[Callable[..., None]]:
    """The command of every protocol that runs on a model, in registry order."""
    return [protocol_command(protocol) for protocol in list_protocols("model")]
