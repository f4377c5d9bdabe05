"""Smoke test of the DyConv benchmark with its per-pass breakdown (tiny shapes)."""

import numpy as np

from benchmarks import dyconv_bench
from dygan_tf.layers.dyconv_dispatch import table_method


def test_dyconv_bench_rows_and_breakdown():
    result = dyconv_bench.run(shapes=[(8, 4), (32, 2)], batches=(2,), with_breakdown=True)
    # The method DyConv2D picks at each shape (the TensorFlow CPU table, nearest shape).
    expected = [table_method((8 * 8, 4, 4, 3, 1))[0], table_method((32 * 32, 2, 2, 3, 1))[0]]
    assert [r["method"] for r in result["shapes"]] == expected
    assert all(r["ratio"] > 0 and np.isfinite(r["ratio"]) for r in result["shapes"])
    passes = result["breakdown"][0]["ms"]
    assert set(passes) == {
        "static_forward",
        "static_input_grad",
        "static_kernel_grad",
        "mixing",
        "grouped_forward",
        "grouped_input_grad",
        "grouped_kernel_grad",
        "patches_forward",
        "patches_forward_backward",
    }
    assert all(v > 0 for v in passes.values())
