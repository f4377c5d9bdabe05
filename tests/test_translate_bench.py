"""Smoke test of the translate benchmark (tiny preset, two 12-slice cases, one round)."""

import pytest

from benchmarks import translate_bench
from dygan_tf.inference.batch_choice import CANDIDATES

pytestmark = pytest.mark.slow


def test_translate_bench_smoke(tmp_path):
    result = translate_bench.run("tiny", cases=2, slices=12, rounds=1, work_dir=tmp_path)
    runs = result["runs"]
    assert set(runs) == set(translate_bench.SETTINGS) and result["case_shape"] == [240, 240, 12]
    assert all(len(r["seconds"]) == 1 and r["cases_per_minute"] > 0 for r in runs.values())
    assert (runs["before"]["batch"], runs["before"]["read_ahead"]) == (4, False)
    assert (runs["after"]["batch"], runs["after"]["read_ahead"]) == ("auto", True)
    (choice,) = runs["after"]["auto_choices"]  # 11 brain slices: 4 and 8 fit
    assert choice["chosen"] in CANDIDATES and list(choice["slices_per_s"]) == ["4", "8"]
    assert result["ratio_after_vs_before"] == result["ratios_vs_before"]["after"]
    assert "cpu_flags" in result["machine"] and isinstance(result["lscpu"], dict)
    assert list(tmp_path.iterdir()) == []  # its temporary folder is gone
