"""Smoke test of the data benchmark on the session phantom (tiny settings)."""

from benchmarks import data_bench
from tests.helpers import PHANTOM_HGG, PHANTOM_LGG


def test_data_bench_smoke(phantom_root):
    result = data_bench.run(str(phantom_root), image_size=32, workers=2, elements=5)
    assert result["cases"] == PHANTOM_HGG + PHANTOM_LGG
    assert result["prep_vs_load"]["ratio"] > 0
    assert result["tfdata"]["slices_per_s"] > 0 and result["tfdata"]["records"] == 20
