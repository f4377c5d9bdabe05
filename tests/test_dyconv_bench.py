"""Smoke test of the DyConv benchmark with its per-pass breakdown (tiny shapes)."""

import numpy as np
import pytest

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


def test_the_dispatch_table_times_every_method_at_a_preset_shape(capsys):
    """`--dispatch`: the DyConv shapes of a preset, every method timed at one of them,
    the table's source, and a bad --presets as one line."""
    from dygan_tf.layers.dyconv_methods import METHODS
    from dygan_tf.utils.cli import run_main

    shapes = dyconv_bench.preset_shapes("tiny")
    assert shapes and all(entry["batch"] in (3, 6) for entry in shapes.values())
    assert all(name.startswith("tiny:") for e in shapes.values() for name in e["layers"])
    seconds = dyconv_bench.time_methods(8, 8, 4, 4, 3, 1, batch=2, repeats=1)
    assert set(seconds) == set(METHODS) and all(s > 0 for s in seconds.values())
    row = {"input": [8, 8, 4], "filters": 4, "kernel_size": 3, "stride": 2, "best": "loop"}
    source = dyconv_bench.table_source({"rows": [row]})
    assert source == 'TENSORFLOW_CPU_TABLE = {\n    (16, 4, 4, 3, 2): "loop",\n}'
    with pytest.raises(SystemExit) as exit_info:
        run_main(dyconv_bench.main, ["--dispatch", "--presets", "demo,nope"])
    assert exit_info.value.code == 2
    assert "--presets: expected names among" in capsys.readouterr().err
