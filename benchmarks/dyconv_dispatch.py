"""Measures every DyConv method at the layer shapes of the presets: the dispatch table.

    python -m benchmarks.dyconv_dispatch [--presets demo,paper] [--out F.json] [--print-table]

For each distinct DyConv2D shape in the generator and discriminator of each preset, times
forward + backward (gradients for the input, the experts and the mixing weights) of every
method in `dygan_tf.layers.dyconv_methods.METHODS`, each a tf.function with an unknown batch
(as `fit` traces the step), interleaved and repeated so that load drifts hit all alike.
The generator's rows use the step's batch (3 tasks); the discriminator's twice that
(real and fake pairs in one call). `--print-table` prints `TENSORFLOW_CPU_TABLE` for
layers/dyconv_dispatch.py. Methods whose intermediate tensor would exceed `--max-mb` are skipped.
"""

import json
import time

import numpy as np

from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main


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


def run(presets=("demo", "paper"), repeats=3, max_mb=512, log=print):
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
                json.dumps(
                    {
                        k: row[k]
                        for k in (
                            "input",
                            "filters",
                            "kernel_size",
                            "stride",
                            "batch",
                            "ms",
                            "best",
                        )
                    }
                )
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
    parser = ArgumentParser(prog="python -m benchmarks.dyconv_dispatch", description=__doc__)
    parser.add_argument("--presets", default="demo,paper")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-mb", type=float, default=512)
    parser.add_argument("--out")
    parser.add_argument("--print-table", action="store_true")
    args = parser.parse_args(argv)
    presets = tuple(p for p in args.presets.split(",") if p)
    from dygan_tf.config.run_config import PRESETS

    bad = [p for p in presets if p not in PRESETS]
    if bad or not presets:
        parser.error(
            f"--presets: expected names among {', '.join(PRESETS)}. Received: {args.presets!r}"
        )
    import_tensorflow_quietly()
    result = run(presets, args.repeats, args.max_mb)
    if args.out:
        write_json_atomic(args.out, result)
    if args.print_table:
        print(table_source(result))


if __name__ == "__main__":
    run_main(main)
