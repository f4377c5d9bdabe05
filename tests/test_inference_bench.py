"""Smoke test of the inference benchmark (tiny preset, a small volume)."""

import pytest

from benchmarks import inference_bench

pytestmark = pytest.mark.slow


def test_inference_bench_smoke(tmp_path):
    result = inference_bench.run("tiny", shape=(48, 40, 12), repeats=2, work_dir=tmp_path)
    assert result["image_size"] == 64 and result["volume"]["slices"] == 12
    assert 0 < result["volume"]["brain_slices"] <= 12
    assert result["volume"]["slices_per_s"] > 0
    latency = result["latency_batch3"]
    assert latency["savedmodel_signature_s"] > 0 and latency["ratio_savedmodel_vs_keras_eager"] > 0
