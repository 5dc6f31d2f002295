"""Evaluation protocols: one module each, pure functions over features that return result rows.

A protocol never opens a file or a data loader: it takes arrays and returns
:class:`jepa_eval.results.record.Metric` rows. Each module declares its
:class:`~jepa_eval.protocols.registry.Protocol` and registers it; the import below is the list of
protocols, in the order tables show them. A new protocol is one new module plus its tests, and its
name added here.
"""

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.protocols import knn, linear, attentive, lowshot, rank, monitor, signals  # each registers itself
from jepa_eval.protocols.registry import Protocol, registered

__all__ = ["knn", "linear", "attentive", "lowshot", "rank", "monitor", "signals", "get_protocol", "list_protocols"]


def list_protocols(runs_on: str | None = None) -> list[Protocol]:
    """The registered protocols in table order; ``runs_on`` 'model' or 'run' keeps those kinds."""
    return [p for p in registered().values() if runs_on is None or p.runs_on == runs_on]


def get_protocol(name: str, runs_on: str | None = None) -> Protocol:
    """The registered protocol called ``name`` (of kind ``runs_on`` when given)."""
    known = {p.name: p for p in list_protocols(runs_on)}
    if name not in known:
        raise JepaEvalError(f"unknown protocol {name!r}", expected=f"one of {', '.join(known)}", found=repr(name))
    return known[name]
