"""Progress in logs: away from a terminal, one plain line every few percent, never a carriage return."""

from __future__ import annotations

import io

from jepa_eval.core.progress import LINE_EVERY_PERCENT, LineProgress, progress


def test_a_log_gets_one_line_every_few_percent_and_one_at_the_end() -> None:
    out = io.StringIO()
    assert list(LineProgress(range(100), desc="features", unit="batch", file=out)) == list(range(100))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert [int(line.split()[1].rstrip("%")) for line in lines] == list(range(LINE_EVERY_PERCENT, 101, LINE_EVERY_PERCENT))
    assert lines[-1].startswith("features: 100% (100/100 batch)") and "s left" in lines[-1]


def test_manual_updates_carry_the_latest_postfix_and_an_unknown_total_prints_a_count() -> None:
    out = io.StringIO()
    bar = LineProgress(total=4, desc="epoch 1/2", unit="step", file=out)
    for step in range(4):
        bar.set_postfix(loss=f"{1.0 / (step + 1):.2f}")
        bar.update(1)
    bar.close()
    assert out.getvalue().splitlines()[-1].endswith("; loss=0.25")
    unknown = io.StringIO()
    counted = LineProgress(iter(range(7)), desc="views", file=unknown)
    assert list(counted) == list(range(7)) and unknown.getvalue() == "views: 7 it\n"


def test_progress_prints_lines_when_standard_error_is_not_a_terminal(capsys) -> None:
    assert isinstance(progress(range(3), desc="x"), LineProgress)  # pytest's captured stderr is no terminal
    assert list(progress(range(3), enabled=False)) == [0, 1, 2] and capsys.readouterr().err == ""
