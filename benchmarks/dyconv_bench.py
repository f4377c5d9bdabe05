"""DyConv2D vs a static keras Conv2D of the same shape, forward + backward.

Both layers are timed alternately in one process at the paper generator's decoder
shapes; the figure is the ratio of median step times (DyConv / Conv2D). `--breakdown`
adds, per shape, the time of each pass (forward, input gradient, kernel gradient) of the
static conv and of both per-example methods, and of the kernel mixing: where the gap is.
`python -m benchmarks.dyconv_bench [--quick] [--breakdown] [--out F.json]`.
"""

import json
import time

import numpy as np

from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, run_main

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

    from dygan_tf.layers.dyconv import DyConv2D

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
    return {
        "spatial": size,
        "channels": channels,
        "batch": batch,
        "method": dyconv.conv_method_for(x.shape),
        "dyconv_s": round(dy, 5),
        "conv2d_s": round(st, 5),
        "ratio": round(dy / st, 3),
    }


def breakdown(size, channels, batch, repeats=5, seed=0, kernel_size=3):
    """Milliseconds of each pass, static conv vs the per-example methods (one process,
    interleaved). The grouped method's gradient passes are its custom gradient's parts."""
    import tensorflow as tf

    from dygan_tf.layers import tf_dyconv as gc
    from dygan_tf.layers.dyconv_methods import method_function

    patches_conv = method_function("patches")

    k, rng = kernel_size, np.random.RandomState(seed)
    x = tf.constant(rng.standard_normal((batch, size, size, channels)).astype("float32"))
    experts = tf.constant(rng.standard_normal((3, k, k, channels, channels)).astype("float32"))
    alpha = tf.constant(rng.uniform(size=(batch, 3)).astype("float32"))
    kernels = tf.einsum("bk,khwcf->hwcbf", alpha, experts)
    example_kernels = tf.einsum("bk,khwcf->bhwcf", alpha, experts)  # patches' layout
    dy = tf.constant(rng.standard_normal((batch, size, size, channels)).astype("float32"))
    geometry = (gc._geometry(size, k, 1, "SAME"),) * 2
    static_kernel = experts[0]

    def patches_step(x, kernels):
        with tf.GradientTape() as tape:
            tape.watch([x, kernels])
            y = patches_conv(x, kernels, 1, "same")
        return tape.gradient(y, [x, kernels], output_gradients=dy)

    passes = {
        "static_forward": (lambda x: tf.nn.conv2d(x, static_kernel, 1, "SAME"), (x,)),
        "static_input_grad": (
            lambda dy: tf.raw_ops.Conv2DBackpropInput(
                input_sizes=tf.shape(x),
                filter=static_kernel,
                out_backprop=dy,
                strides=[1, 1, 1, 1],
                padding="SAME",
            ),
            (dy,),
        ),
        "static_kernel_grad": (
            lambda x, dy: tf.raw_ops.Conv2DBackpropFilter(
                input=x,
                filter_sizes=tf.shape(static_kernel),
                out_backprop=dy,
                strides=[1, 1, 1, 1],
                padding="SAME",
            ),
            (x, dy),
        ),
        "mixing": (lambda a, e: tf.einsum("bk,khwcf->hwcbf", a, e), (alpha, experts)),
        "grouped_forward": (lambda x, w: gc._conv(x, w, 1, "SAME", geometry), (x, kernels)),
        "grouped_input_grad": (
            lambda dy, w: gc._input_grad(dy, w, 1, geometry, (size, size)),
            (dy, kernels),
        ),
        "grouped_kernel_grad": (
            lambda x, dy: gc._kernel_grad(x, dy, 1, geometry, (k, k, channels, channels)),
            (x, dy),
        ),
        "patches_forward": (lambda x, w: patches_conv(x, w, 1, "same"), (x, example_kernels)),
        "patches_forward_backward": (patches_step, (x, example_kernels)),
    }
    functions = {name: tf.function(f) for name, (f, _) in passes.items()}

    def once(name):
        t0 = time.perf_counter()
        out = tf.nest.flatten(functions[name](*passes[name][1]))
        float(tf.reshape(out[0], [-1])[0])
        return time.perf_counter() - t0

    for name in passes:
        once(name), once(name)  # trace, warm up
    times = {name: [] for name in passes}
    for _ in range(repeats):
        for name in passes:
            times[name].append(once(name))
    return {
        "spatial": size,
        "channels": channels,
        "batch": batch,
        "ms": {name: round(1e3 * float(np.median(t)), 2) for name, t in times.items()},
    }


def run(quick=False, batches=(3, 12), shapes=None, jit_compile=False, with_breakdown=False):
    """`shapes` ((spatial, channels), ...) replaces the paper's (halved if `quick`)."""
    if shapes is None:
        shapes = [(s // 2, c) for s, c in PAPER_SHAPES] if quick else list(PAPER_SHAPES)
    rows = [compare(s, c, b, jit_compile=jit_compile) for b in batches for s, c in shapes]
    ratios = [r["ratio"] for r in rows]
    extra = (
        {"breakdown": [breakdown(s, c, batches[0]) for s, c in shapes]} if with_breakdown else {}
    )
    return extra | {
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
    parser.add_argument("--breakdown", action="store_true", help="time each pass separately")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    try:
        batches = tuple(int(b) for b in args.batches.split(","))
    except ValueError:
        parser.error(f"--batches must be comma-separated integers. Received: {args.batches!r}")
    result = run(args.quick, batches, with_breakdown=args.breakdown)
    print(json.dumps(result, indent=2))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    run_main(main)
