"""User-facing errors: one paragraph that says what was expected and what was found."""

from __future__ import annotations

import signal
import sys
from collections.abc import Callable
from typing import Any


class JepaEvalError(Exception):
    """An error caused by the user's input (a file, a dataset, an option), not by a bug.

    The CLI prints it as one paragraph and exits non-zero without a traceback (unless
    ``--debug``). Build it from its parts so every message has the same shape::

        raise JepaEvalError("checkpoint has an unknown layout",
                            expected="top-level keys such as 'target_encoder' or 'model'",
                            found="keys ['foo', 'bar']",
                            hint="pass --ckpt-key to pick the state dict")
    """

    def __init__(self, problem: str, *, expected: str | None = None,
                 found: str | None = None, hint: str | None = None) -> None:
        self.problem = problem
        self.expected = expected
        self.found = found
        self.hint = hint
        super().__init__(self.paragraph())

    def paragraph(self) -> str:
        parts = [self.problem.rstrip(".") + "."]
        if self.expected:
            parts.append(f"Expected {self.expected.rstrip('.')}.")
        if self.found:
            parts.append(f"Found {self.found.rstrip('.')}.")
        if self.hint:
            parts.append(self.hint.rstrip(".") + ".")
        return " ".join(parts)


class Interrupted(BaseException):
    """A stop asked by SIGINT/SIGTERM; typer swallows KeyboardInterrupt but not this."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.exit_code = 128 + signum


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signum)


def run_main(app: Callable[[], Any], console: Any, *, debug: Callable[[], bool], saved: str) -> None:
    """Run a Typer app as a console entry point.

    A :class:`JepaEvalError` becomes ``error: <paragraph>`` and exit code 2 (the traceback only
    when ``debug()``); SIGINT/SIGTERM stop cleanly with exit 130/143 and print ``saved``, which
    says what is on disk.
    """
    from rich.markup import escape

    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        app()
    except JepaEvalError as exc:
        if debug():
            raise
        console.print(f"[bold red]error:[/] {escape(exc.paragraph())}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as exc:
        console.print(f"interrupted ({exc}): {saved}", highlight=False)
        sys.exit(exc.exit_code)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
