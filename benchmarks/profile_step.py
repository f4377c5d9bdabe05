"""Where a DyGAN train step's time goes: a TensorBoard profile and a table from it.

    python -m benchmarks.profile_step --preset demo|paper [--steps 3] [--out DIR]
    python -m benchmarks.profile_step --backend jax --preset demo [--rounds 3] [--out DIR]

Runs the compiled train function `fit` runs for `--warmup` steps, then traces `--steps`
steps with `tf.profiler`. `DIR/logs` opens in TensorBoard's Profile tab; `DIR/profile.json`
and `DIR/profile.md` hold the table: every executed op's time, read back from the trace,
summed per step and split for the generator (G) and the discriminator (D) into

    dyconv_forward      a DyConv2D's per-example convolution
    dyconv_input_grad   its gradient with respect to the layer's input
    dyconv_kernel_grad  its gradient with respect to the per-example kernels
    kernel_mixing       routing, mixing K experts into per-example kernels, bias; both ways
    instance_norm       InstanceNormalization (GroupNormalization(groups=-1)), both ways
    static_conv         keras Conv2D, both ways
    other               activations, pooling, resizing, concatenation, casts

plus `step/optimizer` (both Adam updates) and `step/other` (losses, metrics). Op times
are summed over TensorFlow's threads, so their total can exceed the wall time when two
ops run at once; the wall time per step (without the profiler) is given beside them.

`--backend jax` (no profile): variants of JAX's step timed in one process (`jax_variants`).
"""

import collections
import glob
import json
import os
import re
import time

import numpy as np

from benchmarks.common import alternate, machine
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main
from dygan_tf.utils.cpu import describe_onednn
from dygan_tf.utils.errors import UserError

CATEGORIES = tuple(
    "dyconv_forward dyconv_input_grad dyconv_kernel_grad kernel_mixing instance_norm "
    "static_conv other".split()
)
_NETWORK = re.compile(r"^(generator|discriminator)(_\d+)?$")
_BACKPROP_TYPES = {"input": ("BackpropInput",), "kernel": ("BackpropFilter",)}


def layer_kinds(model):
    """{layer name: "dyconv" | "norm" | "conv"} for the layers the table splits out."""
    import keras

    from dygan_tf.layers.dyconv import DyConv2D

    kinds = {}
    for layer in model.layers:
        if isinstance(layer, DyConv2D):
            kinds[layer.name] = "dyconv"
        elif isinstance(layer, keras.layers.GroupNormalization):
            kinds[layer.name] = "norm"
        elif isinstance(layer, keras.layers.Conv2D):
            kinds[layer.name] = "conv"
    return kinds


def classify(op_name, op_type, kinds):
    """(group, category) of one executed op; `kinds` maps "G"/"D" to layer_kinds()."""
    parts = op_name.split("/")
    grad = "gradient_tape" in parts
    found = [(i, m) for i, m in enumerate(map(_NETWORK.match, parts)) if m]
    if not found:
        return ("step", "optimizer" if "optimizer" in op_name else "other")
    i, match = found[0]
    network = "G" if match.group(1) == "generator" else "D"
    layer = parts[i + 1] if i + 1 < len(parts) else ""
    kind = kinds[network].get(layer) or kinds[network].get(re.sub(r"_\d+$", "", layer))
    inner = parts[i + 2 :]
    if kind == "norm":
        return network, "instance_norm"
    if kind == "conv":
        return network, "static_conv"
    if kind != "dyconv":
        return network, "other"
    if "input_grad" in inner or any(t in op_type for t in _BACKPROP_TYPES["input"]):
        return network, "dyconv_input_grad"
    if "kernel_grad" in inner or any(t in op_type for t in _BACKPROP_TYPES["kernel"]):
        return network, "dyconv_kernel_grad"
    if "conv" in inner and "expert_mix" not in inner:
        # Autodiff of a method's own ops (patches, stacked): the input side.
        return network, "dyconv_input_grad" if grad else "dyconv_forward"
    return network, "kernel_mixing"


def read_op_times(log_dir):
    """{(op name, op type): picoseconds} summed over every op event in the traces."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    files = glob.glob(os.path.join(log_dir, "**", "*.xplane.pb"), recursive=True)
    if not files:
        raise RuntimeError(f"no *.xplane.pb under {log_dir}: the profiler wrote no trace")
    totals = collections.Counter()
    for path in files:
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
        for plane in space.planes:
            metadata = plane.event_metadata
            for line in plane.lines:
                for event in line.events:
                    name = metadata[event.metadata_id].name
                    # Op kernels are traced as "op_name:OpType"; runtime events use "::".
                    if "::" in name or ":" not in name or " " in name:
                        continue
                    op_name, op_type = name.rsplit(":", 1)
                    totals[(op_name, op_type)] += event.duration_ps
    return totals


def summarize(totals, kinds, steps):
    """The table: ms per step per (group, category), shares, and the top ops."""
    ms = collections.defaultdict(float)
    per_op = collections.Counter()
    for (op_name, op_type), ps in totals.items():
        group, category = classify(op_name, op_type, kinds)
        ms[(group, category)] += ps / 1e9 / steps
        per_op[f"{op_name}:{op_type}"] += ps / 1e9 / steps
    total = sum(ms.values())
    table = {}
    for group in ("G", "D"):
        rows = {c: round(ms.get((group, c), 0.0), 3) for c in CATEGORIES}
        table[group] = rows | {"total": round(sum(rows.values()), 3)}
    table["step"] = {c: round(ms.get(("step", c), 0.0), 3) for c in ("optimizer", "other")}
    return {
        "op_ms_per_step": table,
        "op_ms_per_step_total": round(total, 3),
        "shares": {f"{g}/{c}": round(v / total, 4) for (g, c), v in sorted(ms.items()) if total},
        "top_ops_ms_per_step": {k: round(v, 3) for k, v in per_op.most_common(25)},
    }


def markdown(result):
    table, wall = result["op_ms_per_step"], result["wall_ms_per_step"]
    lines = [
        f"Profile of the `{result['preset']}` {result.get('model', 'dygan')} train step "
        f"({result['mixed_precision']}, "
        f"jit_compile={result['jit_compile']}), {result['steps']} traced steps; "
        f"wall {wall:.1f} ms/step without the profiler; op times summed over threads "
        f"{result['op_ms_per_step_total']:.1f} ms/step.",
        f"Machine: {result['machine']}.",
        "",
        "| ms per step | " + " | ".join(CATEGORIES) + " | total |",
        "|---|" + "---|" * (len(CATEGORIES) + 1),
    ]
    for group in ("G", "D"):
        cells = " | ".join(f"{table[group][c]:.1f}" for c in (*CATEGORIES, "total"))
        lines.append(f"| {group} | {cells} |")
    step = table["step"]
    lines.append(
        f"\nOptimizers {step['optimizer']:.1f} ms, rest of the step {step['other']:.1f} ms."
    )
    return "\n".join(lines) + "\n"


def machine_line():
    """The CPU (dygan_tf.utils.cpu's kind and flags), cores, oneDNN and the load."""
    from dygan_tf.utils import cpu

    flags = cpu.cpu_flags()
    shown = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    setting = describe_onednn()
    onednn = (
        f"{setting['TF_ENABLE_ONEDNN_OPTS'] or 'unset'} (oneDNN "
        f"{'on' if setting['enabled'] else 'off'}, {setting['source']}; "
        f"CPU kind {setting['cpu_kind']})"
    )
    load = " ".join(f"{v:.1f}" for v in os.getloadavg()) if hasattr(os, "getloadavg") else "?"
    return (
        f"{cpu.cpu_kind(flags)} CPU, {os.cpu_count()} cores, {' '.join(shown)}; "
        f"TF_ENABLE_ONEDNN_OPTS={onednn}; load average {load} at the end"
    )


def profile(
    preset="demo", steps=3, warmup=2, out_dir="profiles", mixed_precision=None, pix2pix=False
):
    """Traces `steps` train steps of `preset` (or its pix2pix twin) into `out_dir`;
    returns the table dict."""
    import keras
    import tensorflow as tf

    from benchmarks.backend_step import make_batch, make_step
    from dygan_tf.config.run_config import as_pix2pix, get_preset
    from dygan_tf.models.builders import build_dygan

    config = get_preset(preset).override(mixed_precision=mixed_precision)
    config = as_pix2pix(config) if pix2pix else config
    keras.utils.set_random_seed(0)
    gan = build_dygan(config)
    run = make_step(gan, make_batch(config))  # the compiled train function `fit` runs
    for _ in range(warmup):
        run()
    times, _ = alternate({"step": run}, 1, steps)
    log_dir = os.path.join(out_dir, "logs")
    tf.profiler.experimental.start(log_dir)
    try:
        for step in range(steps):
            with tf.profiler.experimental.Trace("train", step_num=step, _r=1):
                run()
    finally:
        tf.profiler.experimental.stop()
    kinds = {"G": layer_kinds(gan.generator), "D": layer_kinds(gan.discriminator)}
    result = {
        "preset": config.preset,
        "model": "pix2pix" if pix2pix else "dygan",
        "mixed_precision": config.train.mixed_precision,
        "jit_compile": config.train.jit_compile,
        "steps": steps,
        "machine": machine_line(),
        "wall_ms_per_step": round(1e3 * float(np.median(times["step"])), 2),
        "log_dir": log_dir,
    } | summarize(read_op_times(log_dir), kinds, steps)
    write_json_atomic(os.path.join(out_dir, "profile.json"), result)
    with open(os.path.join(out_dir, "profile.md.tmp"), "w", encoding="utf-8") as f:
        f.write(markdown(result))
    os.replace(os.path.join(out_dir, "profile.md.tmp"), os.path.join(out_dir, "profile.md"))
    return result


def jax_variants(preset="demo", rounds=3, steps=5):
    """Where JAX's DyGAN step spends its time beyond TensorFlow's, in one JAX process:
    the same model, weights and batch under variants of what `fit` does on JAX, timed
    alternating (the DyConv methods measured per layer as `fit` does, every layer on the
    CPU default "loop", TensorFlow's table; with and without the state donated to
    `jax.jit`; pix2pix), then `conv_kernels`: XLA's CPU convolutions against oneDNN's."""
    import keras

    from benchmarks.backend_step import make_batch, make_step
    from dygan_tf.config.run_config import as_pix2pix, get_preset
    from dygan_tf.layers import dyconv_dispatch
    from dygan_tf.models.builders import build_dygan

    config = get_preset(preset)
    batch = make_batch(config)
    rows = len(batch[0])

    def compiled(gan, donate):  # (the step, its first call's seconds: the compile)
        run = make_step(gan, batch, donate=donate, copy=True)
        return run, alternate({"first": run}, 1, 1)[0]["first"][0]

    keras.utils.set_random_seed(0)
    gan = build_dygan(config)
    shapes = gan.dyconv_input_shapes(rows)
    measured = dyconv_dispatch.measure(shapes, by_default=True)

    def assign(methods):
        for layer, _ in shapes:
            if layer.path in measured:
                layer.measured_choice = (methods(layer), "profile")
        return {layer.path: layer.conv_method_choice(shape)[0] for layer, shape in shapes}

    def table_method(layer):
        shape = dict((other.path, s) for other, s in shapes)[layer.path]
        _, out_h, out_w, _ = layer.compute_output_shape(shape)
        key = (out_h * out_w, layer.in_channels, layer.filters, *layer.kernel_size[:1])
        return dyconv_dispatch.table_method((*key, layer.strides[0]))[0]

    variants, methods = {}, {}
    for name, chooser, donate in (
        ("measured (as fit)", lambda layer: measured[layer.path][0], True),
        ("measured, no donation", lambda layer: measured[layer.path][0], False),
        ("loop everywhere (CPU default)", lambda layer: "loop", True),
        ("TensorFlow's table", table_method, True),
    ):
        methods[name] = assign(chooser)
        variants[name], compile_s = compiled(gan, donate)
        methods[name] = {"compile_seconds": round(compile_s, 1), "methods": methods[name]}
    pix2pix = build_dygan(as_pix2pix(config))
    variants["pix2pix"], compile_s = compiled(pix2pix, True)
    methods["pix2pix"] = {"compile_seconds": round(compile_s, 1)}
    times, _ = alternate(variants, rounds, steps)
    result = {
        name: {"step_seconds_median": round(float(np.median(t)), 4), **methods[name]}
        for name, t in times.items()
    }
    return {"steps": result, "static_conv_ms": conv_kernels(gan, rows)}


def conv_kernels(gan, rows, repeats=20):
    """ms of a static 3x3 convolution forward + backward at each distinct DyConv input
    shape of G, on JAX (jitted) and on TensorFlow (tf.function, oneDNN), best of
    `repeats`, in this process."""
    import jax
    import jax.numpy as jnp
    import tensorflow as tf

    from dygan_tf.layers.dyconv import DyConv2D
    from dygan_tf.models.dygan import leaf_layers

    shapes = sorted(
        {
            (rows, *layer.input[0].shape[1:], layer.filters)
            for layer in leaf_layers(gan.generator)
            if isinstance(layer, DyConv2D) and layer.kernel_size == (3, 3)
        }
    )
    result = []
    for b, h, w, c, f in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((b, h, w, c)).astype("float32")
        k = rng.standard_normal((3, 3, c, f)).astype("float32")

        def jax_loss(x, k):
            y = jax.lax.conv_general_dilated(
                x, k, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
            )
            return jnp.sum(y)

        jax_step = jax.jit(jax.grad(jax_loss, argnums=(0, 1)))
        xj, kj = jnp.asarray(x), jnp.asarray(k)

        @tf.function
        def tf_step(x, k):
            with tf.GradientTape() as tape:
                tape.watch([x, k])
                y = tf.reduce_sum(tf.nn.conv2d(x, k, 1, "SAME"))
            return tape.gradient(y, [x, k])

        xt, kt = tf.constant(x), tf.constant(k)
        timings = {}
        for name, call in (
            ("jax", lambda f=jax_step, a=xj, b=kj: jax.block_until_ready(f(a, b))),
            ("tensorflow", lambda f=tf_step, a=xt, b=kt: [g.numpy() for g in f(a, b)]),
        ):
            call()
            timings[name] = round(1e3 * min(alternate({name: call}, 1, repeats)[0][name]), 3)
        ratio = round(timings["jax"] / timings["tensorflow"], 2)
        result.append({"shape": [b, h, w, c, f], **timings, "jax_over_tf": ratio})
    return result


def main_jax(args, out):
    """`--backend jax`: `jax_variants` into `out`/jax_variants.json."""
    from dygan_tf.training.backends import select_backend

    select_backend("jax")
    import dygan_tf  # noqa: F401 (before Keras: the CPU settings and the Keras objects)

    result = {"machine": machine(), "preset": args.preset, "rounds": args.rounds}
    result["steps_per_round"] = args.steps
    result["date"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    result.update(jax_variants(args.preset, args.rounds, args.steps))
    write_json_atomic(os.path.join(out, "jax_variants.json"), result)
    for name, row in result["steps"].items():
        print(f"{name}: {row['step_seconds_median'] * 1e3:.1f} ms/step")
    for row in result["static_conv_ms"]:
        print(f"conv {row['shape']}: JAX {row['jax']} ms, TF {row['tensorflow']} ms")
    print(f"wrote {os.path.join(out, 'jax_variants.json')}")


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.profile_step", description=__doc__)
    parser.add_argument("--preset", default="demo", choices=("paper", "demo", "tiny"))
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--mixed-precision", default=None, choices=("none", "float16", "bfloat16"))
    parser.add_argument(
        "--pix2pix", action="store_true", help="profile the preset's pix2pix twin instead"
    )
    parser.add_argument(
        "--backend",
        default="tensorflow",
        choices=("tensorflow", "jax"),
        help="jax: time the variants of JAX's step instead (jax_variants), no profile",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--backend jax: rounds")
    parser.add_argument("--out", default=None, help="folder (default: profiles/<preset>)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error(
            f"expected --steps >= 1 and --warmup >= 1. Received: --steps {args.steps} "
            f"--warmup {args.warmup}"
        )
    out = args.out or os.path.join("profiles", args.preset)
    if os.path.exists(out) and not os.path.isdir(out):
        raise UserError(f"--out: {out} exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    if args.backend == "jax":
        return main_jax(args, out)
    import_tensorflow_quietly()
    result = profile(args.preset, args.steps, args.warmup, out, args.mixed_precision, args.pix2pix)
    print(markdown(result))
    print(json.dumps(result["top_ops_ms_per_step"], indent=1))
    print(
        f"wrote {out}/profile.json, {out}/profile.md; TensorBoard: tensorboard --logdir {out}/logs"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
