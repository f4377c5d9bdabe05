"""DyConv2D vs a static keras Conv2D of the same shape, forward + backward.

Both layers are timed alternately in one process at the paper generator's decoder
shapes; the figure is the ratio of median step times (DyConv / Conv2D).
`python -m benchmarks.dyconv_bench [--quick] [--out F.json]`.
"""

import json
import time

import numpy as np

from dygan_tf.cli import ArgumentParser, run_main, write_json_atomic

PAPER_SHAPES = ((256, 64), (128, 128), (64, 256), (32, 512))  # (spatial, channels)


def _step_function(layer, dynamic, jit_compile=False):
    import tensorflow as tf

    @tf.function(jit_compile=jit_compile)
    def step(x, task):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, task) if dynamic else layer(x)
            # float32 sum: under mixed_float16 a float16 sum of squares overflows.
            loss = tf.reduce_sum(tf.square(tf.cast(y, "float32")))
        return tape.gradient(loss, [x] + layer.trainable_weights)

    return step


def _median_seconds(step, x, task, repeats, min_seconds=0.5):
    step(x, task)  # trace
    times = []
    while len(times) < repeats or sum(times) < min_seconds:
        t0 = time.perf_counter()
        grads = step(x, task)
        float(grads[0][0, 0, 0, 0])
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def compare(size, channels, batch, repeats=5, seed=0, jit_compile=False):
    import keras

    from dygan_tf.layers import DyConv2D

    keras.utils.set_random_seed(seed)
    rng = np.random.RandomState(seed)
    x = rng.standard_normal((batch, size, size, channels)).astype("float32")
    task = np.eye(12, dtype="float32")[rng.randint(0, 12, batch)]
    dyconv = DyConv2D(channels, 3, use_bias=False)
    static = keras.layers.Conv2D(channels, 3, padding="same", use_bias=False)
    dyconv(x[:1], task[:1])
    static(x[:1])
    dy_step = _step_function(dyconv, True, jit_compile)
    static_step = _step_function(static, False, jit_compile)
    dy_times, static_times = [], []
    for _ in range(2):  # alternate, so drifts in machine load hit both
        dy_times.append(_median_seconds(dy_step, x, task, repeats))
        static_times.append(_median_seconds(static_step, x, task, repeats))
    dy, st = min(dy_times), min(static_times)
    return {"spatial": size, "channels": channels, "batch": batch,
            "dyconv_s": round(dy, 5), "conv2d_s": round(st, 5), "ratio": round(dy / st, 3)}


def run(quick=False, batches=(3, 12), shapes=None, jit_compile=False):
    """`shapes` ((spatial, channels), ...) replaces the paper's (halved if `quick`)."""
    if shapes is None:
        shapes = [(s // 2, c) for s, c in PAPER_SHAPES] if quick else list(PAPER_SHAPES)
    rows = [compare(s, c, b, jit_compile=jit_compile) for b in batches for s, c in shapes]
    ratios = [r["ratio"] for r in rows]
    return {
        "shapes": rows,
        "geometric_mean_ratio": round(float(np.exp(np.mean(np.log(ratios)))), 3),
        "target": 1.15,
        "quick": quick,
        "jit_compile": jit_compile,
    }


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.dyconv_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="halve the spatial sizes")
    parser.add_argument("--batches", default="3,12")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches must be comma-separated integers. Received: {args.batches!r}")
    result = run(args.quick, batches)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    run_main(main)
