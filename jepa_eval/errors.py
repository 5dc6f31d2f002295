"""User-facing errors: one paragraph that says what was expected and what was found."""

from __future__ import annotations


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
