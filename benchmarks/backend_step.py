"""The one train-step benchmark: DyGAN vs pix2pix on any Keras backend (no TensorFlow).

`benchmarks.run` times its train steps here too.

    KERAS_BACKEND=jax python -m benchmarks.backend_step --preset demo --out F.json
    python -m benchmarks.backend_step --backend jax --preset paper \
        --mixed-precision bfloat16 --out F.json
    python -m benchmarks.backend_step --backend jax --profile gpu --out F.json
    python -m benchmarks.backend_step --preset demo --against REV --out F.json

In one process, on the backend's first device: DyGAN's step (the 3 tasks of one slice)
and pix2pix's (`as_pix2pix`: the same U-Net with static convolutions and the PatchGAN D)
timed alike in alternating rounds; their FLOP rates (benchmarks/common.py's count) and
ratio against its target; the fraction of the matmul peak (`common.matmul_peak`, once
per compute dtype in a process); the projected BraTS epoch (1400 source slices). On JAX
the step is DyGAN's stateless `jax_train_step` under `jax.jit` with the state donated,
as Keras's trainer runs it; on TensorFlow the compiled train function `fit` runs; on
PyTorch the eager step.

`--profile gpu` is the GPU machine's run (benchmarks/gpu_kit.py and `benchmarks.run
--gpu` run it): the paper preset (`--preset` overrides it, e.g. `tiny` for a rehearsal
on a CPU), float32 (TF32 where the library's default: the settings are recorded), then
bfloat16 (`--mixed-precision` picks one), the DyConv methods measured on the device and
cached as in `fit`, the device's name and each run's peak memory. The JSON is rewritten
after each precision, so a run stopped in the second keeps the first.

`--against REV`: today's DyGAN step against git revision REV's (its `dygan_tf` imported
beside today's under another name), built alike and timed alternating in this process.
"""

import importlib
import io
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import time
import traceback

import numpy as np

from benchmarks.common import (
    BRATS_EPOCH_SLICES,
    alternate,
    describe_step,
    device_facts,
    device_memory,
    machine,
    matmul_peak,
    reset_peak_memory,
    verdict,
)
from dygan_tf.utils.atomic import write_json_atomic

COMPUTE_DTYPES = {"none": "float32", "float16": "float16", "bfloat16": "bfloat16"}
GPU_PROFILE_PRESET = "paper"
GPU_PROFILE_PRECISIONS = ("none", "bfloat16")  # float32 (TF32 where the default), bfloat16


def make_batch(config, task_code=None, seed=0):
    """(image, target, task) of one random slice and the config's tasks, float32."""
    if task_code is None:
        from dygan_tf.config.tasks import task_code

    size, targets = config.model.image_size, config.train.targets
    rng = np.random.RandomState(seed)
    image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), len(targets), 0).astype("float32")
    target = rng.uniform(-1, 1, (len(targets), size, size, 1)).astype("float32")
    task = np.stack([task_code(config.train.source, t) for t in targets]).astype("float32")
    return image, target, task


def make_step(gan, batch, package="dygan_tf", donate=True, copy=False):
    """A zero-argument callable running one train step and waiting for it. `package`:
    the name the DyGAN's package is imported under; on JAX, `donate` the state to
    `jax.jit` and `copy` it first (so that several steps can share one model)."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        jax_train_step = importlib.import_module(f"{package}.models.steps").jax_train_step
        variables = (gan.trainable_variables, gan.non_trainable_variables)
        variables += (gan.optimizer.variables, gan.metrics_variables)
        state = [[jax.numpy.array(v.value) if copy else v.value for v in vs] for vs in variables]
        step = jax.jit(lambda s, d: jax_train_step(gan, s, d), donate_argnums=0 if donate else ())
        data = tuple(jax.device_put(x) for x in batch)

        def run():
            logs, new_state = step(state[0:4], data)
            state[:] = list(new_state)
            jax.block_until_ready(logs)
            return logs

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        iterator = iter(tf.data.Dataset.from_tensors(batch).repeat())  # a static batch
        gan.make_train_function()

        def run():
            logs = gan.train_function(iterator)
            float(logs["g_loss"])
            return logs

        return run

    def run():  # torch: the eager step, synchronised on the loss values
        logs = gan.train_step(batch)
        float(keras.ops.convert_to_numpy(logs["g_loss"]))
        return logs

    return run


def measure(preset="demo", mixed_precision="none", rounds=4, steps=5, matmul_peaks=None, **options):
    """{"dygan", "pix2pix", "flop_rate_ratio", ...} timed in this process.

    `matmul_peaks`: a dict {compute dtype: GFLOP/s} kept across calls, so that the matmul
    peak is measured once per dtype in a process (filled here where it lacks the dtype).
    `options`: `warmup` (steps before the timing, default 2), `matmul_n` (the peak's
    matrix size) and config overrides (`depth`, `jit_compile`).
    """
    import gc

    import keras

    from dygan_tf.config.run_config import as_pix2pix, get_preset
    from dygan_tf.layers import dyconv_dispatch
    from dygan_tf.models.builders import build_dygan

    warmup, matmul_n = options.pop("warmup", 2), options.pop("matmul_n", None)
    gc.collect()  # free the last call's models (cycles) first: ~2 GB at paper size
    config = get_preset(preset).override(mixed_precision=mixed_precision, **options)
    batch = make_batch(config)
    reset_peak_memory()
    runs = {}
    for name, run_config in (("dygan", config), ("pix2pix", as_pix2pix(config))):
        keras.utils.set_random_seed(0)
        gan = build_dygan(run_config)
        dyconv_dispatch.measure(gan.dyconv_input_shapes(len(batch[0])))  # as fit chooses
        step = make_step(gan, batch)
        t0 = time.perf_counter()
        for _ in range(warmup):
            step()
        runs[name] = {
            "run": step,
            "warmup_seconds_incl_compile": round(time.perf_counter() - t0, 2),
            **describe_step(run_config, gan, len(batch[0])),
        }
    times, logs = alternate({name: run["run"] for name, run in runs.items()}, rounds, steps)
    memory = device_memory()  # before the matmul peak's own n x n operands
    compute = COMPUTE_DTYPES[mixed_precision]
    matmul_peaks = {} if matmul_peaks is None else matmul_peaks
    if compute not in matmul_peaks:
        matmul_peaks[compute] = matmul_peak(compute, matmul_n)
    peak = matmul_peaks[compute]
    result = {}
    for name, run in runs.items():
        run.pop("run")
        median = float(np.median(times[name]))
        gflops = run["flops"]["per_step"] / median / 1e9
        finite = [float(keras.ops.convert_to_numpy(v)) for v in logs[name].values()]
        result[name] = {
            **run,
            "losses_finite": bool(np.isfinite(finite).all()),
            "step_seconds_median": round(median, 4),
            "step_seconds_all": [round(t, 4) for t in times[name]],
            "achieved_gflops_per_s": gflops,
            "fraction_of_matmul_peak": gflops / peak,
            "source_slices_per_s": 1.0 / median,
            "brats_epoch_minutes": BRATS_EPOCH_SLICES * median / 60,
        }
    d, p = result["dygan"], result["pix2pix"]
    ratio = d["achieved_gflops_per_s"] / p["achieved_gflops_per_s"]
    stretch = verdict("flop_rate_stretch", ratio)
    result["flop_rate_ratio"] = ratio
    result.update(verdict("flop_rate_ratio", ratio))
    result.update(stretch=stretch["target"], stretch_met=stretch["met"])
    result["step_time_ratio"] = d["step_seconds_median"] / p["step_seconds_median"]
    result["matmul_peak_gflops_per_s"] = {compute: peak}
    result["device_memory"] = memory
    return result


def gpu_profile(
    out,
    preset=GPU_PROFILE_PRESET,
    precisions=GPU_PROFILE_PRECISIONS,
    rounds=4,
    steps=5,
    *,
    xla=False,
    budget_s=None,
    header=None,
    **options,
):
    """The `--profile gpu` record: `measure` at each precision in turn in this process,
    the matmul peak once per compute dtype; written to `out` after each precision.

    `xla`: then the last precision again with `jit_compile` (TensorFlow's XLA step;
    JAX's always is), as "<dtype>_xla". A run that raises is recorded as {"error"}, one
    that would start past `budget_s` as skipped. `header`: more top-level fields;
    `options`: `measure`'s."""
    record = {
        "profile": "gpu",
        "machine": {**machine(), **device_facts()},
        "preset": preset,
        "precisions": list(precisions),
        "rounds": rounds,
        "steps": steps,
        **(header or {}),
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "runs": {},
        "matmul_peak_gflops_per_s": {},
    }
    peaks = record["matmul_peak_gflops_per_s"]
    plan = [(COMPUTE_DTYPES[p], p, {}) for p in precisions]
    if xla:
        plan.append((f"{plan[-1][0]}_xla", precisions[-1], {"jit_compile": True}))
    start = time.perf_counter()
    for key, mixed_precision, extra in plan:
        spent = time.perf_counter() - start
        if budget_s is not None and spent > budget_s:
            skipped = f"time budget: {spent:.0f} s of {budget_s:.0f} s spent"
            record["runs"][key] = {"mixed_precision": mixed_precision, "skipped": skipped}
            write_json_atomic(out, record)
            continue
        try:
            run = measure(preset, mixed_precision, rounds, steps, peaks, **{**options, **extra})
        except Exception as e:  # noqa: BLE001 (recorded; the next run still starts)
            traceback.print_exc()
            run = {"error": f"{type(e).__name__}: {e}"}
        run.pop("matmul_peak_gflops_per_s", None)  # kept once, at the top
        record["runs"][key] = {"mixed_precision": mixed_precision, **run}
        write_json_atomic(out, record)
        if "error" not in run:
            _print_summary(record["machine"]["backend"], preset, key, run)
    return record


def _print_summary(backend, preset, mixed_precision, record):
    d, p = record["dygan"], record["pix2pix"]
    print(
        f"{backend} {preset} {mixed_precision}: DyGAN "
        f"{d['step_seconds_median']:.4g} s vs pix2pix {p['step_seconds_median']:.4g} s per step; "
        f"FLOP-rate ratio {record['flop_rate_ratio']:.2f}; DyGAN at "
        f"{d['fraction_of_matmul_peak']:.1%} of the matmul peak",
        flush=True,
    )


def import_revision(revision, name="dygan_tf_before"):
    """The package `dygan_tf` as it was at git `revision`, imported as `name` beside
    today's (its files copied to a temporary folder, every `dygan_tf` renamed), so that
    two versions of a step can be timed alternately in one process."""
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
        for file in (f for f in files if f.endswith(".py")):
            path = os.path.join(parent, file)
            with open(path, encoding="utf-8") as f:
                text = re.sub(r"\bdygan_tf\b", name, f.read())
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
    sys.path.insert(0, folder)
    return importlib.import_module(name)


def _prepared(package, preset, warmup, seed=0):
    """One DyGAN train step of `package` (a name `dygan_tf` is imported under), warm."""
    import keras

    def module(name):
        return importlib.import_module(f"{package}.{name}")

    config = module("config.run_config").get_preset(preset)
    keras.utils.set_random_seed(seed)
    gan = module("models.builders").build_dygan(config)
    step = make_step(gan, make_batch(config, module("config.tasks").task_code, seed), package)
    for _ in range(warmup):
        step()
    return step


def versus_revision(revision, preset="demo", rounds=6, steps=10, warmup=3):
    """Today's train step against `revision`'s, built alike (same seed, same batch) and
    timed in alternating rounds in this process: the medians and their ratio."""
    runs = {
        "revision": _prepared(import_revision(revision).__name__, preset, warmup),
        "today": _prepared("dygan_tf", preset, warmup),
    }
    times, _ = alternate(runs, rounds, steps)
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


def main(argv=None):
    from dygan_tf.utils.cli import ArgumentParser

    parser = ArgumentParser(prog="benchmarks.backend_step", description=__doc__.splitlines()[0])
    parser.add_argument("--backend", help="Keras backend (default: KERAS_BACKEND, else tensorflow)")
    parser.add_argument(
        "--profile",
        choices=("gpu",),
        help="gpu: paper preset, float32 then bfloat16, device memory and name",
    )
    parser.add_argument(
        "--preset", choices=("paper", "demo", "tiny"), help="default demo; paper with --profile gpu"
    )
    parser.add_argument(
        "--mixed-precision",
        choices=("none", "float16", "bfloat16"),
        help="default none; with --profile gpu: none, then bfloat16",
    )
    parser.add_argument(
        "--against",
        metavar="REVISION",
        help="time today's DyGAN step against this git revision's, alternating in one process",
    )
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2, help="steps before the timing")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if min(args.rounds, args.steps, args.warmup) < 1:
        parser.error(
            f"expected --rounds, --steps and --warmup >= 1. Received: --rounds {args.rounds} "
            f"--steps {args.steps} --warmup {args.warmup}"
        )
    if args.against and (args.profile or args.mixed_precision):
        parser.error("--against times the preset's own DyGAN step: no --profile, no precision")
    from dygan_tf.training.backends import select_backend
    from dygan_tf.utils.errors import for_flag

    with for_flag("--backend"):
        select_backend(args.backend)
    import dygan_tf  # noqa: F401 (before Keras: the CPU settings and the Keras objects)

    if args.profile == "gpu":
        precisions = (args.mixed_precision,) if args.mixed_precision else GPU_PROFILE_PRECISIONS
        preset = args.preset or GPU_PROFILE_PRESET
        record = gpu_profile(
            args.out, preset, precisions, args.rounds, args.steps, warmup=args.warmup
        )
        return 1 if any("error" in run for run in record["runs"].values()) else 0
    preset = args.preset or "demo"
    if args.against:
        versus = versus_revision(args.against, preset, args.rounds, args.steps, args.warmup)
        write_json_atomic(args.out, {"machine": machine(), **versus})
        seconds = versus["step_seconds_median"]
        print(
            f"{preset} step: today {seconds['today']:.4g} s vs {args.against} "
            f"{seconds['revision']:.4g} s; ratio {versus['ratio_today_over_revision']:.3f} "
            f"(rounds {min(versus['ratio_per_round'])}-{max(versus['ratio_per_round'])})"
        )
        return
    mixed_precision = args.mixed_precision or "none"
    record = {
        "machine": machine(),
        "preset": preset,
        "mixed_precision": mixed_precision,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **measure(preset, mixed_precision, args.rounds, args.steps, warmup=args.warmup),
    }
    write_json_atomic(args.out, record)
    _print_summary(record["machine"]["backend"], preset, mixed_precision, record)


if __name__ == "__main__":
    from dygan_tf.utils.cli import run_main

    run_main(main)
