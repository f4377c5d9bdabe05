"""DyConv2D against a static keras Conv2D, and every DyConv method against each other.

    python -m benchmarks.dyconv_bench [--quick] [--batches 3,12] [--breakdown] [--out F.json]
    python -m benchmarks.dyconv_bench --dispatch [--presets demo,paper] [--repeats 3] \
        [--max-mb 512] [--out F.json] [--print-table]

DyConv2D vs Conv2D: both layers timed alternately in one process, forward + backward, at
the paper generator's decoder shapes; the figure is the ratio of median step times
(DyConv / Conv2D) against its target (benchmarks.common.TARGETS). `--breakdown` adds, per
shape, the time of each pass (forward, input gradient, kernel gradient) of the static
conv and of both per-example methods, and of the kernel mixing: where the gap is.

`--dispatch` (the dispatch table): for each distinct DyConv2D shape in the generator and
discriminator of each preset, forward + backward (gradients for the input, the experts
and the mixing weights) of every method in `dygan_tf.layers.dyconv_methods.METHODS`,
each a tf.function with an unknown batch (as `fit` traces the step), interleaved and
repeated so that load drifts hit all alike. The generator's rows use the step's batch
(3 tasks); the discriminator's twice that (real and fake pairs in one call).
`--print-table` prints `TENSORFLOW_CPU_TABLE` for layers/dyconv_dispatch.py. Methods
whose intermediate tensor would exceed `--max-mb` are skipped.
"""

import json
import time

import numpy as np

from benchmarks.common import verdict
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main

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
    mean = round(float(np.exp(np.mean(np.log(ratios)))), 3)
    return extra | {
        "shapes": rows,
        "geometric_mean_ratio": mean,
        **verdict("dyconv_vs_conv", mean),
        "quick": quick,
        "jit_compile": jit_compile,
    }


def preset_shapes(preset, images=3):
    """{(H, W, C, F, k, stride): {"batch", "layers"}} of the DyConv2D layers of `preset`."""
    from dygan_tf.config.run_config import get_preset
    from dygan_tf.layers.dyconv import DyConv2D
    from dygan_tf.models.builders import build_networks

    shapes = {}
    for network, batch in zip(build_networks(get_preset(preset).model), (images, 2 * images)):
        for layer in network.layers:
            if isinstance(layer, DyConv2D):
                inputs = layer.input
                x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
                _, h, w, c = x.shape
                key = (h, w, c, layer.filters, layer.kernel_size[0], layer.strides[0])
                entry = shapes.setdefault(key, {"batch": batch, "layers": []})
                entry["layers"].append(f"{preset}:{network.name}/{layer.name}")
    return shapes


def _intermediate_mb(method, batch, h, w, c, f, k, stride, experts):
    out = (h // stride) * (w // stride)
    floats = {
        "patches": batch * out * k * k * c,
        "stacked_inputs": batch * h * w * experts * c,
        "stacked_outputs": batch * out * experts * f,
    }.get(method, 0)
    return 4 * floats / 2**20


def time_methods(h, w, c, f, k, stride, batch, experts=3, repeats=3, max_mb=512, seed=0):
    """{method: median seconds of fwd+bwd} at one shape; skipped methods are absent."""
    import tensorflow as tf

    from dygan_tf.layers.dyconv_methods import METHODS, dynamic_conv2d

    rng = np.random.RandomState(seed)
    x = tf.constant(rng.standard_normal((batch, h, w, c)).astype("float32"))
    alpha = tf.constant(rng.uniform(size=(batch, experts)).astype("float32"))
    kernel = tf.constant(rng.standard_normal((experts, k, k, c, f)).astype("float32") * 0.05)
    signature = [
        tf.TensorSpec([None, h, w, c]),
        tf.TensorSpec([None, experts]),
        tf.TensorSpec([experts, k, k, c, f]),
    ]
    steps = {}
    for method in METHODS:
        if _intermediate_mb(method, batch, h, w, c, f, k, stride, experts) > max_mb:
            continue

        def step(x, alpha, kernel, method=method):
            with tf.GradientTape() as tape:
                tape.watch([x, alpha, kernel])
                y = dynamic_conv2d(x, alpha, kernel, stride, "SAME", method)
                loss = tf.reduce_sum(tf.square(y))
            return tape.gradient(loss, [x, alpha, kernel])

        steps[method] = tf.function(step, input_signature=signature)

    def once(method):
        t0 = time.perf_counter()
        grads = steps[method](x, alpha, kernel)
        float(grads[0][0, 0, 0, 0])
        return time.perf_counter() - t0

    times = {m: [] for m in steps}
    for m in steps:
        once(m)  # trace and warm up
    for _ in range(repeats):
        for m in steps:
            times[m].append(once(m))
    return {m: float(np.median(t)) for m, t in times.items()}


def dispatch(presets=("demo", "paper"), repeats=3, max_mb=512, log=print):
    """{"rows"}: every method at every DyConv shape of `presets`, the fastest named."""
    rows = []
    seen = {}
    for preset in presets:
        for key, entry in preset_shapes(preset).items():
            h, w, c, f, k, stride = key
            if (key, entry["batch"]) in seen:
                seen[(key, entry["batch"])]["layers"] += entry["layers"]
                continue
            seconds = time_methods(
                h, w, c, f, k, stride, entry["batch"], repeats=repeats, max_mb=max_mb
            )
            best = min(seconds, key=seconds.get)
            row = {
                "input": [h, w, c],
                "filters": f,
                "kernel_size": k,
                "stride": stride,
                "batch": entry["batch"],
                "layers": entry["layers"],
                "ms": {m: round(1e3 * s, 3) for m, s in seconds.items()},
                "best": best,
                "best_vs_grouped": round(seconds[best] / seconds["grouped"], 3),
            }
            seen[(key, entry["batch"])] = row
            rows.append(row)
            log(
                json.dumps({k: v for k, v in row.items() if k not in ("layers", "best_vs_grouped")})
            )
    return {"rows": rows}


def table_source(result):
    """`TENSORFLOW_CPU_TABLE` entries for layers/dyconv_dispatch.py from a run's rows."""
    lines = ["TENSORFLOW_CPU_TABLE = {"]
    for row in result["rows"]:
        h, w, c = row["input"]
        s = row["stride"]
        out = (-(-h // s)) * (-(-w // s))
        lines.append(
            f'    ({out}, {c}, {row["filters"]}, {row["kernel_size"]}, {s}): "{row["best"]}",'
        )
    return "\n".join(lines + ["}"])


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.dyconv_bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="halve the spatial sizes")
    parser.add_argument("--batches", default="3,12")
    parser.add_argument("--breakdown", action="store_true", help="time each pass separately")
    parser.add_argument("--dispatch", action="store_true", help="every method at each shape")
    parser.add_argument("--presets", default="demo,paper", help="--dispatch: their shapes")
    parser.add_argument("--repeats", type=int, default=3, help="--dispatch: interleaved runs")
    parser.add_argument("--max-mb", type=float, default=512, help="--dispatch: skip above")
    parser.add_argument("--print-table", action="store_true", help="--dispatch: as source")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.dispatch:
        from dygan_tf.config.run_config import PRESETS

        presets = tuple(p for p in args.presets.split(",") if p)
        if not presets or any(p not in PRESETS for p in presets):
            parser.error(
                f"--presets: expected names among {', '.join(PRESETS)}. Received: {args.presets!r}"
            )
        import_tensorflow_quietly()
        result = dispatch(presets, args.repeats, args.max_mb)
        if args.print_table:
            print(table_source(result))
    else:
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
