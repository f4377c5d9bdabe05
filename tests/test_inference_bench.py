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
    # The --tta flip export runs the same volume and batch (its own numbers, not copies).
    flip = result["volume_tta_flip"]
    assert flip["slices"] == 12 and flip["brain_slices"] == result["volume"]["brain_slices"]
    assert flip["ratio_seconds_vs_plain"] == flip["seconds"] / result["volume"]["seconds"]
    assert latency["savedmodel_tta_flip_s"] > 0
    assert latency["savedmodel_tta_flip_s"] != latency["savedmodel_signature_s"]
