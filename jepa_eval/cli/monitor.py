"""``jepa-eval monitor RUN_DIR [--follow]``: the rank metrics (and a quick k-NN) of every checkpoint of a training run.

Exit status: 0 when the run stayed healthy, :data:`COLLAPSE_EXIT` (3) when the collapse rule
fired at some checkpoint, 2 for bad input. With ``--follow`` the command keeps watching the
folder until ``--until-epoch`` or Ctrl-C (then everything measured so far is in the record, and
the exit status still says whether collapse was seen).
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from jepa_eval.cli import options as c
from jepa_eval.cli.protocols import config_from_options, config_options
from jepa_eval.core.errors import Interrupted
from jepa_eval.protocols import get_protocol

#: The exit status of ``monitor`` when the collapse rule fired.
COLLAPSE_EXIT = 3
#: Columns of the live table, in order (a value a run lacks is shown as '-').
COLUMNS = ("rankme", "alpha_req", "lidar", "feature_std", "knn_top1", "train_loss")

RunDirArg = Annotated[Path, typer.Argument(help="Training folder with *-ep{N}.pth.tar / *-latest.pth.tar files.")]
FollowOpt = Annotated[bool, typer.Option("--follow", help="Keep watching the folder and measure each new checkpoint as it lands.")]
PollOpt = Annotated[float, typer.Option("--poll", help="Seconds between two looks at the folder (with --follow).")]
UntilOpt = Annotated[int | None, typer.Option("--until-epoch", help="Stop once a checkpoint of this epoch or later is measured.")]
SettleOpt = Annotated[float, typer.Option("--settle", help="Seconds a file must stay unchanged before it is read.")]
TimeoutOpt = Annotated[float, typer.Option("--wait-timeout", help="Seconds an unreadable or changing checkpoint is retried before it is given up (until it changes again).")]
OnCollapseOpt = Annotated[str | None, typer.Option("--on-collapse", help="Shell command run once when collapse is first flagged; it gets JEPA_EVAL_RUN_DIR, JEPA_EVAL_EPOCH, JEPA_EVAL_REASON and JEPA_EVAL_RESULT.")]
FreshOpt = Annotated[bool, typer.Option("--fresh", help="Start a new result file instead of continuing this run's earlier one.")]


class LiveTable:
    """One row per measured checkpoint: a table redrawn in place on a terminal (its last rows
    that fit), one plain line per checkpoint elsewhere (logs, CI, a scheduler's output file)."""

    def __init__(self, on_terminal: bool) -> None:
        self.rows: list[tuple[str, ...]] = []
        self.live = Live(console=c.console, auto_refresh=False, transient=False) if on_terminal else None
        if self.live is not None:
            self.live.start()

    def add(self, epoch: int, name: str, values: dict[str, float], status: str) -> None:
        cells = (str(epoch), name, *(f"{values[k]:.4g}" if k in values else "-" for k in COLUMNS), status)
        self.rows.append(cells)
        if self.live is None:
            shown = ", ".join(f"{k} {v}" for k, v in zip(COLUMNS, cells[2:-1]) if v != "-")
            c.console.print(f"epoch {epoch} ({name}): {shown} [{status}]", highlight=False, markup=False, soft_wrap=True)
            return
        table = Table(title="monitor", title_justify="left")
        for column in ("epoch", "checkpoint", *COLUMNS, "status"):
            table.add_column(column, justify="left" if column in ("checkpoint", "status") else "right")
        for row in self.rows[-max(3, c.console.size.height - 8):]:
            table.add_row(*row, style="bold red" if row[-1] != "ok" else None)
        self.live.update(table, refresh=True)

    def close(self) -> None:
        if self.live is not None:
            self.live.stop()


def run_on_collapse(command: str, run_dir: Path, epoch: int, reason: str, record: Path | None) -> int:
    """Run the user's ``--on-collapse`` command through the shell with the run in its environment."""
    env = {**os.environ, "JEPA_EVAL_RUN_DIR": str(run_dir), "JEPA_EVAL_EPOCH": str(epoch),
           "JEPA_EVAL_REASON": reason, "JEPA_EVAL_RESULT": str(record or "")}
    return subprocess.run(command, shell=True, env=env, check=False).returncode


class Session:
    """One ``monitor`` command: the run's record, the live table, the plot and the alert."""

    def __init__(self, run_dir: Path, data: str, config: Any, shared: c.Shared, on_collapse: str | None,
                 fresh: bool) -> None:
        from jepa_eval.pipeline.monitor import RunMonitor, earlier_record

        self.run_dir, self.data, self.shared, self.on_collapse = run_dir, data, shared, on_collapse
        earlier = None if fresh else earlier_record(shared.results_dir, run_dir, data, config, shared.mode)
        if earlier is not None:
            say(f"continuing the {len(earlier.metrics)} rows of {earlier.run_id} (--fresh starts a new result file)")
        self.monitor = RunMonitor(run_dir, data, config, shared.options, mode=shared.mode,
                                  results_dir=shared.results_dir, resume=earlier)
        self.plot: Path | None = None
        self.follow = False

    def run(self, *, follow: bool, poll: float, until_epoch: int | None, settle: float, wait_timeout: float) -> str:
        """Measure the checkpoints (and, with ``follow``, keep watching); why it stopped."""
        from jepa_eval.pipeline.monitor import follow_run
        from jepa_eval.pipeline.watch import CheckpointWatcher

        self.follow = follow
        table = LiveTable(on_terminal=sys.stderr.isatty() and not self.shared.json_out)
        with tempfile.TemporaryDirectory(prefix="jepa-eval-monitor-") as snapshots:
            watcher = CheckpointWatcher(self.run_dir, Path(snapshots), settle_s=settle, timeout_s=wait_timeout,
                                        patient=follow, log=lambda message: say(escape(message)))
            for point in self.monitor.points:
                watcher.remember(int(point.coords["epoch"]), str(point.coords["checkpoint"]),
                                 point.coords.get("ckpt_sha256"))
            if follow:
                say(f"following {escape(str(self.run_dir))} every {poll:g} s"
                    + (f" until epoch {until_epoch}" if until_epoch is not None else "")
                    + "; Ctrl-C stops, keeping every checkpoint measured")
            try:
                return follow_run(self.monitor, watcher, follow=follow, poll_s=poll, until_epoch=until_epoch,
                                  on_added=lambda added: self._added(added, table))
            except (KeyboardInterrupt, Interrupted) as exc:
                return f"interrupted ({exc or 'SIGINT'})"
            finally:
                table.close()

    def _added(self, added: Any, table: LiveTable) -> None:
        """Show a measured checkpoint, redraw the plot (when following), and raise the alert when
        collapse is new."""
        coords = added.point.coords
        if added.renamed:
            say(f"epoch {coords['epoch']} was measured from {coords['measured_as']}; it is saved as {coords['checkpoint']}")
            return
        table.add(coords["epoch"], coords["checkpoint"], added.point.values,
                  "ok" if self.monitor.collapse is None else "collapsed")
        if self.follow:
            self._draw()
        if added.collapse is not None:
            epoch, reason = added.collapse
            say(f"[bold red]COLLAPSE flagged at epoch {epoch} of {escape(str(self.run_dir))}: {escape(reason)}[/]")
            if self.on_collapse:
                code = run_on_collapse(self.on_collapse, self.run_dir, epoch, reason, self.monitor.path)
                say(f"--on-collapse command exited with status {code}")

    def _draw(self) -> None:
        """The plot of every metric against epoch, beside the result file."""
        from jepa_eval.report.plots import plot_monitor
        from jepa_eval.report.tidy import collapse_points, tidy_frame

        record, path = self.monitor.record, self.monitor.path
        self.plot = plot_monitor(tidy_frame([record]), path.with_suffix(""), protocol=record.protocol,  # type: ignore[union-attr]
                                 collapse=collapse_points([record]))[0]  # type: ignore[list-item]

    def finish(self, stopped: str, follow: bool) -> None:
        """Print the record (its summary only after following: the table showed the rows), the
        plot and the verdict; exit with :data:`COLLAPSE_EXIT` when collapse was flagged."""
        from jepa_eval.pipeline.monitor import no_checkpoints
        from jepa_eval.results.record import write_record

        record = self.monitor.record
        if record is None:
            if not follow:
                raise no_checkpoints(self.run_dir)
            say(f"{stopped}: no checkpoint was measured")
            return
        if follow and not self.shared.json_out:
            self.monitor.path = self.monitor.path or write_record(record, self.shared.results_dir)
            for key, value in record.summary.items():
                c.stdout.print(f"{key}: {value}", highlight=False)
            c.stdout.print(f"result file: {self.monitor.path}")
        else:
            self.monitor.path = c.finish(record, self.shared.results_dir, self.shared.json_out,
                                         f"monitor of {self.run_dir} on {self.data}")
        if self.plot is None:  # a one-off scan draws once, at the end
            self._draw()
        say(f"plot: {self.plot}")
        collapse = record.summary["collapse_epoch"]
        say(("no collapse flagged" if collapse is None else f"[bold red]collapse flagged from epoch {collapse}[/]")
            + ("" if stopped == "scanned" else f" ({stopped})"))
        if collapse is not None:
            raise typer.Exit(COLLAPSE_EXIT)


def say(message: str) -> None:
    """One line on standard error (rich markup allowed; never wrapped, so log lines stay whole)."""
    c.console.print(message, highlight=False, soft_wrap=True)


WATCHING = (("follow", FollowOpt, False), ("poll", PollOpt, 30.0), ("until_epoch", UntilOpt, None),
            ("settle", SettleOpt, 2.0), ("wait_timeout", TimeoutOpt, 600.0), ("on_collapse", OnCollapseOpt, None),
            ("fresh", FreshOpt, False))


def monitor_command() -> Callable[..., None]:
    """The ``monitor`` command: RUN_DIR, the dataset, following and alerts, and the options of the monitor's config."""
    protocol = get_protocol("monitor", runs_on="run")
    own, parsers = config_options(protocol)

    def monitor(run_dir: Path, data: str, follow: bool, poll: float, until_epoch: int | None, settle: float,
                wait_timeout: float, on_collapse: str | None, fresh: bool, *, shared: c.Shared, **values: Any) -> None:
        session = Session(run_dir, data, config_from_options(protocol, parsers, values, shared), shared, on_collapse, fresh)
        stopped = session.run(follow=follow, poll=poll, until_epoch=until_epoch, settle=settle, wait_timeout=wait_timeout)
        session.finish(stopped, follow)

    monitor.__doc__ = ("Rank metrics (and k-NN) of every checkpoint of a training run, with the epoch where collapse "
                       f"began; --follow keeps watching. Exit status {COLLAPSE_EXIT} when collapse was flagged.")
    fixed = [inspect.Parameter("run_dir", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=RunDirArg),
             inspect.Parameter("data", inspect.Parameter.POSITIONAL_OR_KEYWORD, default="digits", annotation=c.DataOpt)]
    watching = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
                for name, annotation, default in WATCHING]
    shared_param = inspect.Parameter("shared", inspect.Parameter.KEYWORD_ONLY, annotation=c.Shared)
    monitor.__signature__ = inspect.Signature([*fixed, *watching, *own, shared_param])  # type: ignore[attr-defined]
    return c.shared_options("extract", "mode", "results", "json")(monitor)
