"""Published subset files: names become training-split indices in file order; anything else is refused."""

from __future__ import annotations

import pytest

from jepa_eval.core.errors import JepaEvalError
from jepa_eval.data.subsets import read_subset_file

NAMES = [f"n0144_{i}.JPEG" for i in range(20)]


def test_subset_file_gives_indices_in_file_order_ignoring_blank_lines(tmp_path):
    path = tmp_path / "1percent.txt"
    path.write_text("n0144_7.JPEG\n\nn0144_2.JPEG\n  \nn0144_19.JPEG\n")
    assert read_subset_file(path, NAMES).tolist() == [7, 2, 19]


def test_subset_file_reports_the_count_and_first_five_missing_names(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("\n".join(["n0144_1.JPEG"] + [f"x_{i}.JPEG" for i in range(7)]))
    with pytest.raises(JepaEvalError) as info:
        read_subset_file(path, NAMES)
    message = str(info.value)
    assert "7 of 8 images" in message
    assert "x_4.JPEG" in message and "x_5.JPEG" not in message


@pytest.mark.parametrize("line", ["train/n0144_1.JPEG", "..", "a\\b.JPEG"])
def test_subset_file_rejects_paths(tmp_path, line):
    path = tmp_path / "s.txt"
    path.write_text(f"n0144_1.JPEG\n{line}\n")
    with pytest.raises(JepaEvalError, match="paths, not file names"):
        read_subset_file(path, NAMES)


def test_subset_file_rejects_repeats_and_unreadable_files(tmp_path):
    path = tmp_path / "s.txt"
    path.write_text("n0144_1.JPEG\nn0144_1.JPEG\n")
    with pytest.raises(JepaEvalError, match="more than once"):
        read_subset_file(path, NAMES)
    with pytest.raises(JepaEvalError, match="cannot read"):
        read_subset_file(tmp_path / "absent.txt", NAMES)
