"""The shipped transfer suites: ``fewshot-transfer`` (LeJEPA's few-shot table), its case-study
variant on the real photographs, and ``ijepa-lowlevel`` (the I-JEPA paper's Clevr tasks), each
run end to end on tiny copies and reported as paper tables."""

from __future__ import annotations

from pathlib import Path

import pytest

from helpers_data import make_cifar10
from helpers_transfer import make_clevr
from jepa_eval.backbones.spec import ModelSpec
from jepa_eval.data import list_datasets
from jepa_eval.features.splits import ExtractOptions
from jepa_eval.pipeline.suite import Suite, config_for, load_suite, resolve_suite, run_suite
from jepa_eval.report.build import write_report
from jepa_eval.results.record import load_records

LEJEPA_SETS = ["dtd", "aircraft", "cars", "cifar10", "cifar100", "flowers102", "food101", "pets"]


def test_fewshot_transfer_runs_knn_and_linear_on_1_10_and_all_shots_of_the_lejepa_sets() -> None:
    suite = load_suite(resolve_suite("fewshot-transfer"))
    kinds = {}
    for entry in suite.entries:
        config = config_for(entry)
        kinds.setdefault((entry.protocol, config.shots, getattr(config, "select_on", None)), []).append(entry.dataset)
    assert kinds == {("knn", (1, 10, "all"), None): LEJEPA_SETS, ("linear", (1, 10), "none"): LEJEPA_SETS,
                     ("linear", (), "val"): LEJEPA_SETS}
    assert set(LEJEPA_SETS) <= set(list_datasets())
    assert all(config_for(e).shot_seeds == 5 for e in suite.entries if config_for(e).shots)


def test_the_case_study_variant_differs_from_fewshot_transfer_only_in_its_datasets() -> None:
    shipped, variant = (load_suite(resolve_suite(name)) for name in ("fewshot-transfer", "case-study-fewshot"))
    settings = {(e.protocol, repr(e.params)) for e in shipped.entries}
    assert {(e.protocol, repr(e.params)) for e in variant.entries} == settings
    assert {e.dataset for e in variant.entries} == {"cifar10", "imagefolder:.cache/case-study/imagenette"}


@pytest.fixture()
def options(tmp_path: Path) -> ExtractOptions:
    return ExtractOptions(device="cpu", cache_dir=str(tmp_path / "cache"), progress=False)


def test_the_fewshot_entries_of_one_dataset_run_and_make_a_column_per_setting(tmp_path: Path,
                                                                             options: ExtractOptions) -> None:
    shipped = load_suite(resolve_suite("fewshot-transfer"))
    cifar = Suite(shipped.name, "", [e for e in shipped.entries if e.dataset == "cifar10"], shipped.path)
    options.data_root = str(make_cifar10(tmp_path / "cifar", n_per_class=12, n_test_per_class=2))
    outcome = run_suite(cifar, [ModelSpec("pixels:8", name="pixels")], options, tmp_path / "results")
    assert outcome.failed == [] and len(outcome.written) == 3
    records = load_records(tmp_path / "results")
    few = next(r for r in records if r.protocol == "knn")
    assert {(m.coords.get("shots"), m.coords.get("seed")) for m in few.metrics} == {
        (1, s) for s in range(5)} | {(10, s) for s in range(5)} | {(None, None)}
    write_report(tmp_path / "results", tmp_path / "report")
    table = (tmp_path / "report" / "tables" / "top1.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| model"))
    assert header == ("| model | k-NN cifar10 1-shot | k-NN cifar10 10-shot | k-NN cifar10 | linear cifar10 1-shot "
                      "| linear cifar10 10-shot | linear cifar10 |")
    assert "linear: one fixed head or logistic regression, C chosen on held-out val" in table


def _clevr_scenes(count: int) -> list[list[float]]:
    """``count`` scenes: image i has i % 8 + 3 objects, the closest in depth bin i % 6."""
    closest = (7.0, 8.2, 8.7, 9.2, 9.7, 12.0)
    return [[closest[i % 6]] + [50.0] * (i % 8 + 2) for i in range(count)]


def test_ijepa_lowlevel_runs_both_clevr_tasks_and_reports_them_beside_the_paper(tmp_path: Path,
                                                                               options: ExtractOptions) -> None:
    options.data_root = str(make_clevr(tmp_path / "clevr", {"train": _clevr_scenes(48), "val": _clevr_scenes(12)}))
    outcome = run_suite(load_suite(resolve_suite("ijepa-lowlevel")), [ModelSpec("pixels:8", name="pixels")], options,
                        tmp_path / "results")
    assert outcome.failed == [] and len(outcome.written) == 2
    records = {r.dataset.name: r for r in load_records(tmp_path / "results")}
    assert records["clevr-count"].dataset.num_classes == 8 and records["clevr-dist"].dataset.num_classes == 6
    assert all(r.params["transfer"] and r.dataset.eval_split == "val" for r in records.values())
    write_report(tmp_path / "results", tmp_path / "report", with_published=True)
    table = (tmp_path / "report" / "tables" / "top1.md").read_text()
    assert "| model | linear clevr-count | linear clevr-dist |" in table
    assert "| I-JEPA ViT-H/14 † | 86.7 | 72.4 |" in table and "| DINO ViT-B/8 † | 86.6 | 53.4 |" in table
