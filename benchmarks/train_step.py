"""Times one DyGAN train step (the 3 tasks of one slice) and counts its FLOPs.

`python -m benchmarks.train_step [--preset paper] [--steps 5] [--out F.json]`. The
step runs through the model's own compiled train function, as `fit` does.

FLOPs are counted from the layer shapes, not profiled. Per image, a network's forward
cost F is 2 x the multiply-accumulates of its convolutions: H_out*W_out*kh*kw*Cin*Cout
for every Conv2D and DyConv2D, plus for a DyConv2D its kernel mixing K*kh*kw*Cin*Cout,
bias mixing K*Cout and routing dense (Cin+12)*K. A backward pass costs 2F (input
gradient F + weight gradient F). `DyGAN.train_step` runs G once, D on the real pair and
D once on the fake pair (shared by both losses); the D tape back-propagates through both
D passes to D's weights, the G tape through D(fake) to its input only, then through G:

    FLOPs/step = B * (3*F_G + 3*F_D [real] + 4*F_D [fake: fwd, dX+dW, dX]) = B*(3*F_G + 7*F_D)

with B images per step. (The step scores real and fake pairs in one D call, so G's tape
also back-propagates through D's real half, ~B*F_D more executed work that this count,
the model's arithmetic, leaves out for DyGAN and pix2pix alike.) Left out: norms,
activations, pooling, upsampling, losses and the optimizer updates (O(parameters)); the
first layers' unneeded input gradients are counted (the usual 3x convention).
"""

import json
import os
import time

import numpy as np

from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, run_main

STEP_FLOPS_FORMULA = "B * (3*F_G + 7*F_D)"


def forward_macs(model):
    """Per-image multiply-accumulates of `model`'s convolutions: {"conv", "mixing"}."""
    import keras

    from dygan_tf.config.tasks import NUM_TASKS
    from dygan_tf.layers.dyconv import DyConv2D

    conv = mixing = 0
    for layer in _leaf_layers(model):
        if isinstance(layer, DyConv2D):
            experts, kh, kw, cin, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            conv += height * width * kh * kw * cin * cout
            mixing += experts * kh * kw * cin * cout + (cin + NUM_TASKS) * experts
            mixing += experts * cout if layer.use_bias else 0
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            conv += height * width * kh * kw * cin_per_group * cout
    return {"conv": int(conv), "mixing": int(mixing)}


def _leaf_layers(model):
    from dygan_tf.models.dygan import leaf_layers

    return leaf_layers(model)


def dyconv_choices(model):
    """{layer name: {"method", "source"}} of every DyConv2D in `model`: which way each
    runs and where that choice came from (layer argument, dense_map rule, table, ...)."""
    from dygan_tf.layers.dyconv import DyConv2D

    choices = {}
    for layer in _leaf_layers(model):
        if isinstance(layer, DyConv2D):
            inputs = layer.input
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            method, source = layer.conv_method_choice(x.shape)
            choices[f"{model.name}/{layer.name}"] = {"method": method, "source": source}
    return choices


def step_flops(generator, discriminator, images):
    """FLOPs of one train step on `images` images (the formula in the module docstring)."""
    g, d = forward_macs(generator), forward_macs(discriminator)
    f_g, f_d = 2 * sum(g.values()), 2 * sum(d.values())
    per_step = images * (3 * f_g + 7 * f_d)
    mixing = images * (3 * 2 * g["mixing"] + 7 * 2 * d["mixing"])
    return {
        "formula": STEP_FLOPS_FORMULA,
        "images": images,
        "generator_forward_per_image": f_g,
        "discriminator_forward_per_image": f_d,
        "per_step": int(per_step),
        "dyconv_mixing_share": mixing / per_step,
    }


def prepare_step(config="paper", mixed_precision=None, seed=0):
    """(gan, train_function, iterator, config): a built DyGAN and the compiled train
    function `fit` would run, fed the 3 tasks of one random slice forever."""
    import keras
    import tensorflow as tf

    from dygan_tf.config.run_config import get_preset
    from dygan_tf.config.tasks import task_code
    from dygan_tf.models.builders import build_dygan

    if isinstance(config, str):
        config = get_preset(config)
    if mixed_precision is not None:
        # Through the config, not keras.config.set_dtype_policy: build_dygan builds under
        # the config's policy and would quietly override a global one (float32 for "none").
        config = config.override(mixed_precision=mixed_precision)
    keras.utils.set_random_seed(seed)
    gan = build_dygan(config)
    size = config.model.image_size
    rng = np.random.RandomState(seed)
    targets = config.train.targets
    image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), len(targets), 0).astype("float32")
    target = rng.uniform(-1, 1, (len(targets), size, size, 1)).astype("float32")
    task = np.stack([task_code(config.train.source, t) for t in targets])
    # A static batch, as fit's training stream has (dygan_tf.training.run.training_dataset
    # drops no remainder of a repeating stream): the step traced here is the one fit traces.
    data = tf.data.Dataset.from_tensors((image, target, task)).repeat()
    data = data.unbatch().batch(len(targets), drop_remainder=True)
    gan.make_train_function()
    return gan, gan.train_function, iter(data), config


def time_train_step(config="paper", steps=5, warmup=2, mixed_precision=None, seed=0):
    """Seconds per train step (median of `steps`), after `warmup` steps incl. tracing.

    `config` is a RunConfig or a preset name; `mixed_precision` (none|float16|bfloat16),
    if given, replaces the config's. The networks are built under the config's
    precision policy by `build_dygan`.
    """
    gan, train_function, iterator, config = prepare_step(config, mixed_precision, seed)
    targets = config.train.targets
    size = config.model.image_size
    t0 = time.perf_counter()
    for _ in range(warmup):
        logs = train_function(iterator)
        float(logs["g_loss"])
    first = time.perf_counter() - t0
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        logs = train_function(iterator)
        float(logs["g_loss"])  # wait for the step to finish
        times.append(time.perf_counter() - t0)
    median = float(np.median(times))
    flops = step_flops(gan.generator, gan.discriminator, len(targets))
    return {
        "preset": config.preset,
        "mixed_precision": config.train.mixed_precision,
        "jit_compile": bool(gan.jit_compile),  # what the built model compiles with
        "dyconv": config.model.dyconv,
        "discriminator": config.model.discriminator,
        "d_dyconv": config.model.d_dyconv,
        "images_per_step": len(targets),
        "image_size": size,
        "generator_params": int(gan.generator.count_params()),
        "discriminator_params": int(gan.discriminator.count_params()),
        "warmup_seconds_incl_tracing": round(first, 2),
        "step_seconds_median": round(median, 4),
        "step_seconds_all": [round(t, 4) for t in times],
        "losses_finite": bool(np.isfinite([float(v) for v in logs.values()]).all()),
        "flops": flops,
        "achieved_gflops_per_s": flops["per_step"] / median / 1e9,
        "dyconv_methods": {**dyconv_choices(gan.generator), **dyconv_choices(gan.discriminator)},
    }


def import_revision(revision, name="dygan_tf_before"):
    """The package `dygan_tf` as it was at git `revision`, imported as `name` beside
    today's (its files copied to a temporary folder, every `dygan_tf` renamed), so that
    two versions of a step can be timed alternately in one process."""
    import importlib
    import io
    import re
    import subprocess
    import sys
    import tarfile
    import tempfile

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    archive = subprocess.run(
        ["git", "-C", root, "archive", "--format=tar", revision, "dygan_tf"],
        capture_output=True,
        check=True,
    ).stdout
    folder = tempfile.mkdtemp(prefix="dygan_revision_")
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(folder, filter="data")
    os.rename(os.path.join(folder, "dygan_tf"), os.path.join(folder, name))
    for parent, _, files in os.walk(os.path.join(folder, name)):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(parent, file)
                with open(path, encoding="utf-8") as f:
                    text = re.sub(r"\bdygan_tf\b", name, f.read())
                with open(path, "w", encoding="utf-8") as f:
                    f.write(text)
    sys.path.insert(0, folder)
    return importlib.import_module(name)


def versus_revision(revision, preset="demo", rounds=6, steps=10, warmup=3):
    """Today's train step against `revision`'s, built alike (same seed, same batch) and
    timed in alternating rounds in this process: the medians and their ratio."""
    import importlib

    import dygan_tf

    packages = {"revision": import_revision(revision), "today": dygan_tf}
    runs = {}
    for label, package in packages.items():
        modules = {
            part: importlib.import_module(f"{package.__name__}.{part}")
            for part in ("config.run_config", "config.tasks", "models.builders")
        }
        runs[label] = _prepared(modules, preset, warmup)
    times = {label: [] for label in runs}
    for _ in range(rounds):
        for label, run in runs.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                run()
                times[label].append(time.perf_counter() - t0)
    medians = {label: float(np.median(t)) for label, t in times.items()}
    per_round = [
        float(np.median(times["today"][r * steps : (r + 1) * steps]))
        / float(np.median(times["revision"][r * steps : (r + 1) * steps]))
        for r in range(rounds)
    ]
    return {
        "revision": revision,
        "preset": preset,
        "rounds": rounds,
        "steps_per_round": steps,
        "step_seconds_median": {k: round(v, 5) for k, v in medians.items()},
        "ratio_today_over_revision": round(medians["today"] / medians["revision"], 4),
        "ratio_per_round": [round(r, 4) for r in per_round],
    }


def _prepared(modules, preset, warmup, seed=0):
    """A zero-argument callable running one compiled train step of a package's DyGAN."""
    import keras
    import tensorflow as tf

    config = modules["config.run_config"].get_preset(preset)
    keras.utils.set_random_seed(seed)
    gan = modules["models.builders"].build_dygan(config)
    size, targets = config.model.image_size, config.train.targets
    rng = np.random.RandomState(seed)
    image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), len(targets), 0).astype("float32")
    target = rng.uniform(-1, 1, (len(targets), size, size, 1)).astype("float32")
    task = np.stack([modules["config.tasks"].task_code(config.train.source, t) for t in targets])
    data = tf.data.Dataset.from_tensors((image, target, task)).repeat()
    iterator = iter(data.unbatch().batch(len(targets), drop_remainder=True))
    gan.make_train_function()

    def run():
        float(gan.train_function(iterator)["g_loss"])

    for _ in range(warmup):
        run()
    return run


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.train_step", description=__doc__)
    parser.add_argument("--preset", default="paper", choices=("paper", "demo", "tiny"))
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument(
        "--mixed-precision", default="none", choices=("none", "float16", "bfloat16")
    )
    parser.add_argument(
        "--against",
        metavar="REVISION",
        help="time today's step against this git revision's, alternating in one process",
    )
    parser.add_argument("--rounds", type=int, default=6, help="--against: alternating rounds")
    parser.add_argument("--out")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.warmup < 1:
        parser.error(
            f"expected --steps >= 1 and --warmup >= 1. Received: --steps "
            f"{args.steps} --warmup {args.warmup}"
        )
    if args.against:
        from benchmarks.device_facts import machine

        result = {
            "machine": machine(),
            **versus_revision(args.against, args.preset, args.rounds, args.steps, args.warmup),
        }
    else:
        result = time_train_step(
            args.preset, args.steps, args.warmup, mixed_precision=args.mixed_precision
        )
    print(json.dumps(result, indent=2))
    if args.out:
        write_json_atomic(args.out, result)


if __name__ == "__main__":
    run_main(main)
