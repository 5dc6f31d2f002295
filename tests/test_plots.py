"""Every plot is saved as PNG, PDF and the CSV it was drawn from, with the numbers of the data."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest
from scipy.stats import spearmanr

from helpers_report import (COLLAPSE_EPOCH, LIDAR, LINEAR_TOP1, LOWSHOT, MONITOR_EPOCHS, RANKME,
                            all_records, linear_record, lowshot_record, rank_record, write_all)
from jepa_eval.report import plots
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.report.tidy import collapse_points, tidy_frame
from jepa_eval.results.record import Metric, ResultRecord, load_records

RANKME_VS_LINEAR = {"rank_protocol": "rank", "rank_metric": "rankme", "protocol": "linear"}
STEMS = ("bars_knn", "bars_linear", "bars_lowshot", "lowshot_curves", "knn_vs_k", "monitor",
         "rankme_vs_linear", "lidar_vs_linear")


@pytest.fixture(scope="module")
def drawn(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """All plots of the fake results, drawn once for the module: (folder, paths written)."""
    root = tmp_path_factory.mktemp("plots")
    records = write_all(root / "results")
    frame = tidy_frame(load_records(root / "results"))
    paths = plots.write_plots(frame, root / "plots", collapse=collapse_points(records))
    return root / "plots", paths


def test_every_plot_is_written_as_png_pdf_and_csv_and_nothing_is_empty(drawn):
    folder, paths = drawn
    assert sorted(p.name for p in paths) == sorted(f"{s}.{e}" for s in STEMS for e in ("png", "pdf", "csv"))
    for stem in STEMS:
        assert (folder / f"{stem}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (folder / f"{stem}.pdf").read_bytes()[:5] == b"%PDF-"
        assert len(pd.read_csv(folder / f"{stem}.csv")) > 0
    assert not [p for p in folder.iterdir() if ".tmp-" in p.name]


def test_scatter_csv_holds_spearman_rho_equal_to_scipys(drawn):
    folder, _ = drawn
    data = pd.read_csv(folder / "rankme_vs_linear.csv")
    names = list(RANKME)
    expected = spearmanr([RANKME[n] for n in names], [statistics.mean(LINEAR_TOP1[n]) for n in names])
    assert data["spearman_rho"].nunique() == 1
    assert data["spearman_rho"].iloc[0] == pytest.approx(expected.statistic, abs=1e-12)
    assert data["spearman_rho"].iloc[0] == pytest.approx(spearmanr(data["rankme"], data["linear_top1"]).statistic)
    lidar = pd.read_csv(folder / "lidar_vs_linear.csv")
    rho = spearmanr([LIDAR[n] for n in names], [statistics.mean(LINEAR_TOP1[n]) for n in names]).statistic
    assert lidar["spearman_rho"].iloc[0] == pytest.approx(rho)
    assert rho == pytest.approx(0.4)  # LiDAR ranks dino below ijepa and mae on these numbers


def test_bar_csv_has_the_tables_mean_and_std(drawn):
    folder, _ = drawn
    data = pd.read_csv(folder / "bars_linear.csv").set_index("row")
    for name, values in LINEAR_TOP1.items():
        assert data.loc[name, "mean"] == pytest.approx(statistics.mean(values))
        assert data.loc[name, "std"] == pytest.approx(statistics.stdev(values))
    assert data["best"].sum() == 1 and bool(data.loc["dino-b16", "best"])


def test_lowshot_curve_csv_has_mean_and_std_over_seeds_per_point(drawn):
    folder, _ = drawn
    data = pd.read_csv(folder / "lowshot_curves.csv")
    for (kind, amount), values in LOWSHOT.items():
        x = amount if kind == "shots" else amount * 100
        point = data[(data.kind == kind) & (data.x.round(6) == round(x, 6))]
        assert len(point) == 1
        assert point["mean"].iloc[0] == pytest.approx(statistics.mean(values))
        assert point["std"].iloc[0] == pytest.approx(statistics.stdev(values))
        assert point["n"].iloc[0] == 3


def test_monitor_csv_marks_the_collapse_epoch_of_the_collapsing_run_only(drawn):
    folder, _ = drawn
    data = pd.read_csv(folder / "monitor.csv")
    assert set(data.metric) == {"rankme", "alpha_req", "lidar", "knn_top1"}
    assert sorted(data.epoch.unique()) == MONITOR_EPOCHS
    by_label = data.groupby("label")["collapse_epoch"].first()
    assert by_label["ijepa-collapse"] == COLLAPSE_EPOCH and pd.isna(by_label["ijepa-b16"])


def test_knn_curve_has_every_k(drawn):
    folder, _ = drawn
    data = pd.read_csv(folder / "knn_vs_k.csv")
    assert sorted(data.k.unique()) == [10, 20, 100]


def test_scatter_needs_three_checkpoints(tmp_path):
    records = [rank_record(n) for n in ("mae-b16", "dino-b16")] + [linear_record(n, 0) for n in ("mae-b16", "dino-b16")]
    frame = tidy_frame(records)
    with pytest.raises(JepaEvalError, match="at least 3"):
        plots.plot_rank_vs_accuracy(frame, tmp_path / "scatter", **RANKME_VS_LINEAR)
    assert not list(tmp_path.iterdir())


def _raw_pixels(record: ResultRecord, metrics: list[dict[str, object]]) -> ResultRecord:
    """``record`` as if measured on 3,072-d raw pixels: another model name, mode and metrics."""
    return replace(record, model=replace(record.model, name="pixels", sha256=None),
                   features=replace(record.features, mode="pixels"), metrics=[Metric.from_dict(m) for m in metrics])


def test_scatter_ranks_only_features_of_one_size(tmp_path):
    """Raw pixels' RankMe (out of 3,072) sits beside 768-d encoders' but is not ranked with them:
    the encoders' rho is unchanged and the lone pixel point has none."""
    names = list(RANKME)
    records = [rank_record(n) for n in names] + [linear_record(n, 0) for n in names]
    pixel_rank = _raw_pixels(rank_record(names[0]), [{"name": "rankme", "value": 2000.0},
                                                     {"name": "rankme_norm", "value": 2000.0 / 3072}])
    pixel_linear = _raw_pixels(linear_record(names[0], 0), [{"name": "top1", "value": 10.0}])
    data = pd.read_csv(plots.plot_rank_vs_accuracy(tidy_frame(records + [pixel_rank, pixel_linear]),
                                                   tmp_path / "scatter", **RANKME_VS_LINEAR)[-1])
    encoders = data[data["model"] != "pixels"]
    assert set(encoders["rank_bound"]) == {768} and data.loc[data["model"] == "pixels", "rank_bound"].item() == 3072
    expected = spearmanr([RANKME[n] for n in names], [LINEAR_TOP1[n][0] for n in names]).statistic
    assert encoders["spearman_rho"].tolist() == pytest.approx([expected] * len(names))
    assert data.loc[data["model"] == "pixels", "spearman_rho"].isna().all()


def test_scatter_of_mixed_sizes_with_no_group_of_three_is_an_error(tmp_path):
    names = list(RANKME)[:2]
    records = [rank_record(n) for n in names] + [linear_record(n, 0) for n in names]
    records += [_raw_pixels(rank_record(names[0]), [{"name": "rankme", "value": 2000.0},
                                                    {"name": "rankme_norm", "value": 2000.0 / 3072}]),
                _raw_pixels(linear_record(names[0], 0), [{"name": "top1", "value": 10.0}])]
    with pytest.raises(JepaEvalError, match="2 with min\\(N, D\\) = 768, 1 with min\\(N, D\\) = 3072"):
        plots.plot_rank_vs_accuracy(tidy_frame(records), tmp_path / "scatter", **RANKME_VS_LINEAR)


def test_monitor_plot_without_monitor_results_is_an_error(tmp_path):
    frame = tidy_frame([r for r in all_records() if r.protocol != "monitor"])
    with pytest.raises(JepaEvalError, match="no monitor results"):
        plots.plot_monitor(frame, tmp_path / "monitor", protocol="monitor")


def test_every_lowshot_point_draws_its_spread_over_seeds_as_an_error_bar(tmp_path, monkeypatch):
    """Even a setting drawn as a single point per model (one label fraction) shows its ± std."""
    record = lowshot_record()
    kept = [m for m in record.metrics if m.coords.get("fraction") == 0.1 or "shots" in m.coords]
    single = replace(record, metrics=kept)
    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, data, stem: figures.append((fig, data)) or [])
    plots.plot_label_curves(tidy_frame([single]), tmp_path / "curves", protocol="lowshot")
    (fig, data), = figures
    bars = {}
    for ax in fig.axes:
        for container in ax.containers:
            segments = container.lines[2][0].get_segments()  # one vertical segment a point
            bars.update({(ax.get_xlabel(), round(s[0][0], 6)): s[1][1] - s[0][1] for s in segments})
    assert bars.keys() == {("labelled fraction (%)", 10.0), ("labelled images per class", 1.0),
                           ("labelled images per class", 5.0)}
    for (kind, amount), values in LOWSHOT.items():
        x = amount * 100 if kind == "fraction" else amount
        axis = "labelled fraction (%)" if kind == "fraction" else "labelled images per class"
        if (axis, round(x, 6)) in bars:
            assert bars[axis, round(x, 6)] == pytest.approx(2 * statistics.stdev(values))
