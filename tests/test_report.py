"""The tidy frame, paper tables (Markdown, LaTeX), published rows and the report folder."""

from __future__ import annotations

import importlib.resources

import json
import statistics
from pathlib import Path

import pandas as pd
import pytest

from helpers_report import KNN_TOP1, LINEAR_TOP1, LOWSHOT, knn_record, linear_record, write_all
from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data import list_datasets
from jepa_eval.report.build import write_report
from jepa_eval.report.tables import PUBLISHED_CSV, add_published, load_published, paper_table, to_latex, to_markdown
from jepa_eval.report.tidy import RECORD_COLUMNS, filter_frame, tidy_frame
from jepa_eval.results.record import Metric, load_records, write_record


@pytest.fixture()
def results(tmp_path: Path) -> Path:
    write_all(tmp_path / "results")
    return tmp_path / "results"


@pytest.fixture()
def frame(results: Path) -> pd.DataFrame:
    return tidy_frame(load_records(results))


def _column(table, *key: str) -> tuple[str, ...]:
    return (*key, "") if len(key) == len(table.column_fields) else key


def test_tidy_frame_has_one_row_per_metric_with_record_columns_then_coords(results, frame):
    records = load_records(results)
    assert len(frame) == sum(len(r.metrics) for r in records)
    assert list(frame.columns[:len(RECORD_COLUMNS)]) == list(RECORD_COLUMNS)
    assert list(frame.columns[-2:]) == ["metric", "value"]
    for coord in ("k", "fraction", "shots", "lr", "wd", "batchnorm", "epoch", "C"):
        assert coord in frame.columns
    knn = frame[(frame.protocol == "knn") & (frame.model == "dino-b16") & (frame.metric == "top1")]
    assert dict(zip(knn.k, knn.value)) == KNN_TOP1["dino-b16"]
    assert set(knn.split) == {"test"} and set(knn.train_split) == {"train"}


def test_seed_comes_from_params_or_from_the_metric_coords(frame):
    linear = frame[(frame.protocol == "linear") & (frame.metric == "top1") & (frame.model == "mae-b16")]
    assert sorted(linear.seed) == [0, 1, 2]
    lowshot = frame[(frame.protocol == "lowshot") & (frame.metric == "top1")]
    assert sorted(lowshot.seed.unique()) == [0, 1, 2]


def test_a_coordinate_named_like_a_record_column_overrides_it_for_its_row():
    record = linear_record("ijepa-b16", 0)  # a transfer record: candidates carry their own mode
    record.params["transfer"] = True
    record.metrics.append(Metric("candidate_val_top1", 70.0, {"mode": "avgpool4"}))
    frame = tidy_frame([record])
    assert frame.set_index("metric").loc["candidate_val_top1", "mode"] == "avgpool4"
    assert frame.set_index("metric").loc["top1", "mode"] == "avgpool"
    assert frame["transfer"].all() and "mode" not in frame.columns[len(RECORD_COLUMNS):]


def test_params_column_is_sorted_json_without_seed(frame):
    params = frame[(frame.protocol == "linear") & (frame.model == "mae-b16")].params.unique()
    assert len(params) == 1  # the three seeds share one configuration
    assert json.loads(params[0]) == {"epochs": 50, "learning_rates": [0.01, 0.1], "selected_on": "val"}
    assert params[0] == json.dumps(json.loads(params[0]), sort_keys=True)


def test_a_rerun_of_the_same_configuration_replaces_the_older_numbers(tmp_path):
    write_record(knn_record("mae-b16", created="2024-01-01T00:00:00+00:00"), tmp_path)
    write_record(knn_record("mae-b16", created="2024-02-01T00:00:00+00:00", shift=1.0), tmp_path)
    frame = tidy_frame(load_records(tmp_path))
    top1 = frame[(frame.metric == "top1") & (frame.k == 20)]
    assert top1.value.tolist() == [KNN_TOP1["mae-b16"][20] + 1.0]


def test_linear_cells_are_mean_and_sample_std_over_seeds(frame):
    table = paper_table(frame, protocol="linear")
    for name, values in LINEAR_TOP1.items():
        cell = table.cells[(name, _column(table, "linear", "cifar10"))]
        assert cell.mean == pytest.approx(statistics.mean(values))
        assert cell.std == pytest.approx(statistics.stdev(values))
        assert cell.n == 3


def test_knn_column_uses_k20_and_a_single_run_has_no_std(frame):
    table = paper_table(frame, protocol="knn")
    cell = table.cells[("ijepa-b16", _column(table, "knn", "cifar10"))]
    assert cell.mean == KNN_TOP1["ijepa-b16"][20] and cell.n == 1
    assert "k-NN: k=20, T=0.07" in table.settings
    other = paper_table(frame, protocol="knn", select={"k": 100})
    assert other.cells[("ijepa-b16", _column(table, "knn", "cifar10"))].mean == KNN_TOP1["ijepa-b16"][100]


def test_lowshot_has_one_column_per_fraction_and_shot_count_in_order(frame):
    table = paper_table(frame, protocol="lowshot")
    assert [c[-1] for c in table.columns] == ["1%", "10%", "1-shot", "5-shot"]
    cell = table.cells[("ijepa-b16", ("lowshot", "cifar10", "1-shot"))]
    assert cell.mean == pytest.approx(statistics.mean(LOWSHOT[("shots", 1)]))
    assert cell.std == pytest.approx(statistics.stdev(LOWSHOT[("shots", 1)]))


def test_best_value_of_each_column_is_bold_and_only_it(frame):
    table = paper_table(frame, protocol=None)
    markdown = to_markdown(table)
    best_linear = statistics.mean(LINEAR_TOP1["dino-b16"])
    dino = next(line for line in markdown.splitlines() if line.startswith("| dino-b16"))
    assert f"**{best_linear:.1f} ± {statistics.stdev(LINEAR_TOP1['dino-b16']):.1f}**" in dino
    assert f"**{KNN_TOP1['dino-b16'][20]:.1f}**" in dino
    mae = next(line for line in markdown.splitlines() if line.startswith("| mae-b16"))
    assert "**" not in mae
    assert all(not cell.best for (row, _), cell in table.cells.items() if row != "dino-b16")
    # a column with a single row has nothing to compare: no bold
    assert not any(cell.best for (_, col), cell in table.cells.items() if col[0] == "lowshot")


def test_lower_is_better_metrics_bold_the_smallest(frame):
    rows = frame[(frame.protocol == "rank") & (frame.metric == "rankme")].copy()
    rows["metric"] = "uniformity"
    table = paper_table(pd.concat([frame, rows]), protocol="rank", metric="uniformity")
    assert [r for (r, _), c in table.cells.items() if c.best] == ["random-b16"]


def test_latex_uses_booktabs_textbf_pm_and_escapes(frame):
    latex = to_latex(paper_table(frame, protocol=None))
    for token in (r"\toprule", r"\midrule", r"\bottomrule", r"\textbf{", r"$\pm$", r"\begin{tabular}",
                  r"\caption{", r"\cmidrule(lr)", r"cifar10 1\%"):
        assert token in latex
    assert latex.index(r"\toprule") < latex.index(r"\midrule") < latex.index(r"\bottomrule")
    assert "1%" not in latex.replace(r"\%", "")


def test_caption_lists_the_protocol_settings(frame):
    table = paper_table(frame)
    caption = to_markdown(table).splitlines()[0]
    for part in ("k-NN: k=20, T=0.07", "linear: best head on held-out val", "low-shot", "features avgpool/cls"):
        assert part in caption
    assert to_markdown(table, "My caption.").startswith("**Table.** My caption.")


def test_published_rows_sit_under_a_rule_with_their_source_in_a_footnote(tmp_path):
    record = linear_record("ijepa-b16", 0)
    record.dataset.name = "imagenet"
    write_record(record, tmp_path)
    table = add_published(paper_table(tidy_frame(load_records(tmp_path)), protocol="linear"))
    assert "I-JEPA ViT-H/14" in table.reference_rows
    assert table.reference_cells[("I-JEPA ViT-H/14", ("linear", "imagenet", ""))].mean == 79.3
    assert table.sources == ["I-JEPA paper (arXiv 2301.08243) Table 1"]
    assert all(not c.best for c in table.reference_cells.values())
    markdown = to_markdown(table)
    assert "| I-JEPA ViT-H/14 † | 79.3 |" in markdown
    assert markdown.rstrip().endswith("† I-JEPA paper (arXiv 2301.08243) Table 1.")
    latex = to_latex(table)
    own, published = latex.index("ijepa-b16"), latex.index(r"I-JEPA ViT-H/14$^\dagger$")
    assert own < latex.index(r"\midrule", own) < published < latex.index(r"\bottomrule")
    assert r"{\footnotesize $^\dagger$ I-JEPA paper (arXiv 2301.08243) Table 1.}" in latex


def test_published_lowshot_rows_match_the_one_percent_column(tmp_path):
    from helpers_report import lowshot_record

    record = lowshot_record()
    record.dataset.name = "imagenet"
    write_record(record, tmp_path)
    table = add_published(paper_table(tidy_frame(load_records(tmp_path)), protocol="lowshot"))
    assert table.reference_cells[("MSN ViT-B/4", ("lowshot", "imagenet", "1%"))].mean == 75.7


def test_published_csv_holds_the_papers_numbers():
    table = load_published()
    assert list(table.columns[:8]) == ["model", "arch", "protocol", "dataset", "fraction", "metric",
                                       "value", "source"]
    assert set(table.model) == {"I-JEPA", "MAE", "DINO", "iBOT", "data2vec", "CAE", "MSN"}
    assert len(table) == 42 and table.source.str.startswith("I-JEPA paper (arXiv 2301.08243) Table").all()
    lookup = {(r.model, r.arch, r.dataset, r.setting): r.value for r in table.itertuples()}
    assert lookup[("I-JEPA", "ViT-H/16-448", "imagenet", "")] == 81.1
    assert lookup[("I-JEPA", "ViT-H/14", "imagenet", "1%")] == 73.3
    assert lookup[("iBOT", "ViT-L/16", "inat2018", "")] == 57.3
    assert lookup[("MAE", "ViT-H/14", "clevr-count", "")] == 90.5
    assert {d for d in table.dataset if d.startswith("clevr")} <= set(list_datasets())  # report --published matches
    assert PUBLISHED_CSV == Path(str(importlib.resources.files("jepa_eval.report") / "published.csv"))


def test_two_configurations_of_one_model_get_separate_labelled_rows(tmp_path):
    write_record(knn_record("mae-b16", mode="cls"), tmp_path)
    write_record(knn_record("mae-b16", mode="avgpool", shift=2.0), tmp_path)
    write_record(knn_record("dino-b16", temperature=0.1), tmp_path)
    write_record(knn_record("dino-b16", temperature=0.07, shift=-1.0), tmp_path)
    table = paper_table(tidy_frame(load_records(tmp_path)), protocol="knn")
    assert table.rows == ["dino-b16 (temperature=0.07)", "dino-b16 (temperature=0.1)",
                          "mae-b16 (mode=avgpool)", "mae-b16 (mode=cls)"]
    assert table.cells[("mae-b16 (mode=avgpool)", ("knn", "cifar10", ""))].mean == KNN_TOP1["mae-b16"][20] + 2


def test_two_values_for_one_seed_in_a_cell_is_an_error(frame):
    with pytest.raises(JepaEvalError, match="one value per seed"):
        paper_table(frame, protocol="knn", select={"k": [10, 20]})


def test_bad_selections_are_explained(frame, tmp_path):
    with pytest.raises(JepaEvalError, match="cannot select on 'nope'"):
        paper_table(frame, select={"nope": 1})
    with pytest.raises(JepaEvalError, match="no results for metric 'top1' of protocol 'rank'"):
        paper_table(frame, protocol="rank")
    no20 = frame[~((frame.protocol == "knn") & (frame.k == 20))]
    with pytest.raises(JepaEvalError, match="no k=20"):
        paper_table(no20, protocol="knn")
    with pytest.raises(JepaEvalError, match="no results for model nobody"):
        filter_frame(frame, models=["nobody"])


def test_filter_frame_keeps_models_datasets_and_suite(frame):
    assert set(filter_frame(frame, models=["mae-b16"]).model) == {"mae-b16"}
    assert set(filter_frame(frame, datasets=["cifar10"]).dataset) == {"cifar10"}
    tagged = frame.assign(suite=["quick" if m == "dino-b16" else None for m in frame.model])
    assert set(filter_frame(tagged, suite="quick").model) == {"dino-b16"}


def test_write_report_writes_tidy_tables_and_plots(tmp_path):
    records = [knn_record(name) for name in ("mae-b16", "dino-b16")]
    records += [linear_record("mae-b16", seed) for seed in range(2)]
    for record in records:
        write_record(record, tmp_path / "results")
    paths = write_report(tmp_path / "results", tmp_path / "report", with_published=True)
    names = {p.relative_to(tmp_path / "report").as_posix() for p in paths}
    assert names == {"tidy.csv", "tidy.parquet", "tables/top1.md", "tables/top1.tex",
                     *(f"plots/bars_{p}.{ext}" for p in ("knn", "linear") for ext in ("png", "pdf", "csv")),
                     "plots/knn_vs_k.png", "plots/knn_vs_k.pdf", "plots/knn_vs_k.csv"}
    assert all(p.stat().st_size > 0 for p in paths)
    csv = pd.read_csv(tmp_path / "report" / "tidy.csv")
    parquet = pd.read_parquet(tmp_path / "report" / "tidy.parquet")
    assert len(csv) == len(parquet) == sum(len(r.metrics) for r in records)
    assert list(parquet.columns) == list(csv.columns)


def test_write_report_filters_by_model(tmp_path):
    for name in ("mae-b16", "ijepa-b16"):
        write_record(linear_record(name, 0), tmp_path / "results")
    write_report(tmp_path / "results", tmp_path / "report", models=["mae-b16"])
    text = (tmp_path / "report" / "tables" / "top1.md").read_text()
    assert "mae-b16" in text and "ijepa-b16" not in text
    assert set(pd.read_csv(tmp_path / "report" / "tidy.csv").model) == {"mae-b16"}


def test_write_report_on_an_empty_folder_is_an_error(tmp_path):
    with pytest.raises(JepaEvalError, match="no result records"):
        write_report(tmp_path, tmp_path / "out")
