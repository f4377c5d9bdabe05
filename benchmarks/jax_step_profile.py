"""Where JAX's DyGAN step spends its time beyond TensorFlow's:
`python -m benchmarks.profile_step --backend jax --preset demo [--rounds 3] [--out DIR]`.

In one JAX process: variants of the step on the same weights and batch, timed
alternating (`jax_variants`), and the demo generator's static convolutions on JAX and on
TensorFlow (`conv_kernels`). Writes DIR/jax_variants.json.
"""

import os
import time

import numpy as np

from dygan_tf.utils.atomic import write_json_atomic


def jax_variants(preset="demo", rounds=3, steps=5):
    """Where JAX's DyGAN step spends its time beyond TensorFlow's, in one JAX process.

    The same model, weights and batch under variants of what `fit` does on JAX, timed
    alternating: the DyConv methods measured per layer (as `fit`), every layer on the
    CPU default ("loop"), TensorFlow's table where `keras.ops` has its method; with and
    without the state donated to `jax.jit`; and pix2pix (no DyConv at all). Then the
    demo's static convolutions forward + backward on JAX and on TensorFlow, in this
    same process: what XLA's CPU convolution costs against oneDNN's at each shape.
    """
    import jax
    import keras

    from benchmarks.backend_step import _batch
    from dygan_tf.config.run_config import as_pix2pix, get_preset
    from dygan_tf.layers import dyconv_dispatch
    from dygan_tf.models.builders import build_dygan
    from dygan_tf.models.steps import jax_train_step

    config = get_preset(preset)
    batch = tuple(jax.device_put(x) for x in _batch(config))
    rows = len(batch[0])

    def compiled(gan, donate):
        state = [
            [jax.numpy.array(v.value, copy=True) for v in variables]
            for variables in (
                gan.trainable_variables,
                gan.non_trainable_variables,
                gan.optimizer.variables,
                gan.metrics_variables,
            )
        ]
        step = jax.jit(lambda s, d: jax_train_step(gan, s, d), donate_argnums=0 if donate else ())

        def run():
            logs, new_state = step(state[0:4], batch)
            state[:] = list(new_state)
            jax.block_until_ready(logs)

        t0 = time.perf_counter()
        run()
        return run, time.perf_counter() - t0

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
    times = {name: [] for name in variants}
    for _ in range(rounds):
        for name, run in variants.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                run()
                times[name].append(time.perf_counter() - t0)
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
            best = float("inf")
            for _ in range(repeats):
                t0 = time.perf_counter()
                call()
                best = min(best, time.perf_counter() - t0)
            timings[name] = round(1e3 * best, 3)
        result.append(
            {
                "shape": [b, h, w, c, f],
                **timings,
                "jax_over_tf": round(timings["jax"] / timings["tensorflow"], 2),
            }
        )
    return result


def main_jax(args, out):
    """profile_step's `--backend jax`: the record in `out`/jax_variants.json."""
    from benchmarks.device_facts import machine
    from dygan_tf.training.backends import select_backend

    select_backend("jax")
    import dygan_tf  # noqa: F401 (before Keras: the CPU settings and the Keras objects)

    result = {
        "machine": machine(),
        "preset": args.preset,
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **jax_variants(args.preset, args.rounds, args.steps),
    }
    path = os.path.join(out, "jax_variants.json")
    write_json_atomic(path, result)
    for name, row in result["steps"].items():
        print(f"{name}: {row['step_seconds_median'] * 1e3:.1f} ms/step")
    for row in result["static_conv_ms"]:
        print(f"conv {row['shape']}: JAX {row['jax']} ms, TF {row['tensorflow']} ms")
    print(f"wrote {path}")
