"""The DyGAN and pix2pix train steps on any Keras backend, TensorFlow not needed.

    KERAS_BACKEND=jax python -m benchmarks.backend_step --preset demo --out F.json
    python -m benchmarks.backend_step --backend jax --preset paper \
        --mixed-precision bfloat16 --out F.json
    python -m benchmarks.backend_step --backend jax --profile gpu --out F.json

In one process, on the backend's first device: DyGAN's step (the 3 tasks of one slice)
and pix2pix's (`as_pix2pix`: the same U-Net with static convolutions and the PatchGAN D)
timed alike, alternating rounds, with their FLOP rates (benchmarks/train_step.py's
count) and the ratio; the device's matmul peak in the step's compute dtype (the fraction
of it each step reaches) and the projected time of one BraTS epoch (1400 source slices).
On JAX the step is DyGAN's own stateless `jax_train_step` under `jax.jit` with the state
donated, as Keras's trainer runs it; on TensorFlow the compiled train function `fit`
runs; on PyTorch the eager step. Nothing here imports TensorFlow unless it is the backend.

`--profile gpu` is the GPU machine's run (benchmarks/gpu_kit.py runs it there): the paper
preset (`--preset` overrides it, e.g. `tiny` for a rehearsal on a CPU), float32 (TF32
where the library uses it by default: the settings are recorded) and then bfloat16 in
one process (`--mixed-precision` picks one), the DyConv methods measured on the device
and cached as in `fit`, the device's name, each run's peak device memory, and the matmul
peak measured once per compute dtype. The JSON is rewritten after each precision, so a
run stopped in the second keeps the first.
"""

import time

import numpy as np

from benchmarks.device_facts import device_facts, device_memory, machine, reset_peak_memory
from dygan_tf.utils.atomic import write_json_atomic

BRATS_EPOCH_SLICES = 1400  # 280 training cases x 5 slices (benchmarks/gpu_bench.py)
COMPUTE_DTYPES = {"none": "float32", "float16": "float16", "bfloat16": "bfloat16"}
GPU_PROFILE_PRESET = "paper"
GPU_PROFILE_PRECISIONS = ("none", "bfloat16")  # float32 (TF32 where the default), bfloat16


def _batch(config):
    from dygan_tf.config.tasks import task_code

    size, targets = config.model.image_size, config.train.targets
    rng = np.random.RandomState(0)
    image = np.repeat(rng.uniform(-1, 1, (1, size, size, 1)), len(targets), 0).astype("float32")
    target = rng.uniform(-1, 1, (len(targets), size, size, 1)).astype("float32")
    task = np.stack([task_code(config.train.source, t) for t in targets]).astype("float32")
    return image, target, task


def make_step(gan, batch):
    """A zero-argument callable running one train step and waiting for it."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        from dygan_tf.models.steps import jax_train_step

        state = [
            [v.value for v in gan.trainable_variables],
            [v.value for v in gan.non_trainable_variables],
            [v.value for v in gan.optimizer.variables],
            [v.value for v in gan.metrics_variables],
        ]
        step = jax.jit(lambda s, d: jax_train_step(gan, s, d), donate_argnums=0)
        data = tuple(jax.device_put(x) for x in batch)

        def run():
            logs, new_state = step(state[0:4], data)
            state[:] = list(new_state)
            jax.block_until_ready(logs)
            return logs

        return run
    if backend == "tensorflow":
        import tensorflow as tf

        dataset = tf.data.Dataset.from_tensors(batch).repeat()
        iterator = iter(dataset)
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


def matmul_peak(dtype, n=None, repeats=5):
    """Best-of GFLOP/s of an n x n matmul in `dtype` on the backend's device."""
    import keras

    n = n or (8192 if _device() == "gpu" else 1024)
    a = keras.random.normal((n, n), dtype=dtype, seed=1)
    b = keras.random.normal((n, n), dtype=dtype, seed=2)
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        matmul = jax.jit(lambda x, y: x @ y)

        def wait(x):
            return jax.block_until_ready(x)
    else:
        matmul = keras.ops.matmul

        def wait(x):
            return keras.ops.convert_to_numpy(x[:1, :1])

    wait(matmul(a, b))
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        wait(matmul(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def _device():
    from dygan_tf.utils import backend

    return backend.device_kind()


def measure(preset="demo", mixed_precision="none", rounds=4, steps=5, matmul_peaks=None):
    """{"dygan", "pix2pix", "flop_rate_ratio", ...} timed in this process.

    `matmul_peaks`: a dict {compute dtype: GFLOP/s} kept across calls, so that the matmul
    peak is measured once per dtype in a process (filled here where it lacks the dtype).
    """
    import keras

    from benchmarks.train_step import dyconv_choices, step_flops
    from dygan_tf.config.run_config import as_pix2pix, get_preset
    from dygan_tf.layers import dyconv_dispatch
    from dygan_tf.models.builders import build_dygan

    config = get_preset(preset).override(mixed_precision=mixed_precision)
    batch = _batch(config)
    reset_peak_memory()
    runs = {}
    for name, run_config in (("dygan", config), ("pix2pix", as_pix2pix(config))):
        keras.utils.set_random_seed(0)
        gan = build_dygan(run_config)
        dyconv_dispatch.measure(gan.dyconv_input_shapes(len(batch[0])))  # as fit chooses
        step = make_step(gan, batch)
        t0 = time.perf_counter()
        step()
        step()
        runs[name] = {
            "run": step,
            "times": [],
            "warmup_seconds_incl_compile": round(time.perf_counter() - t0, 2),
            "flops": step_flops(gan.generator, gan.discriminator, len(batch[0])),
            "dyconv_methods": {
                **dyconv_choices(gan.generator),
                **dyconv_choices(gan.discriminator),
            },
            "jit_compile": bool(gan.jit_compile),
        }
    for _ in range(rounds):  # alternating, so a change of machine load hits both
        for run in runs.values():
            for _ in range(steps):
                t0 = time.perf_counter()
                logs = run["run"]()
                run["times"].append(time.perf_counter() - t0)
            run["losses_finite"] = bool(
                np.isfinite([float(keras.ops.convert_to_numpy(v)) for v in logs.values()]).all()
            )
    memory = device_memory()  # before the matmul peak's own n x n operands
    compute = COMPUTE_DTYPES[mixed_precision]
    matmul_peaks = {} if matmul_peaks is None else matmul_peaks
    if compute not in matmul_peaks:
        matmul_peaks[compute] = matmul_peak(compute)
    peak = matmul_peaks[compute]
    result = {}
    for name, run in runs.items():
        median = float(np.median(run.pop("times")))
        run.pop("run")
        gflops = run["flops"]["per_step"] / median / 1e9
        result[name] = {
            **run,
            "step_seconds_median": round(median, 4),
            "achieved_gflops_per_s": gflops,
            "fraction_of_matmul_peak": gflops / peak,
            "brats_epoch_minutes": BRATS_EPOCH_SLICES * median / 60,
        }
    result["flop_rate_ratio"] = (
        result["dygan"]["achieved_gflops_per_s"] / result["pix2pix"]["achieved_gflops_per_s"]
    )
    result["matmul_peak_gflops_per_s"] = {compute: peak}
    result["device_memory"] = memory
    return result


def gpu_profile(
    out, preset=GPU_PROFILE_PRESET, precisions=GPU_PROFILE_PRECISIONS, rounds=4, steps=5
):
    """The `--profile gpu` record: `measure` at each precision in turn in this process,
    the matmul peak once per compute dtype; written to `out` after each precision."""
    record = {
        "profile": "gpu",
        "machine": {**machine(), **device_facts()},
        "preset": preset,
        "precisions": list(precisions),
        "rounds": rounds,
        "steps": steps,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        "runs": {},
        "matmul_peak_gflops_per_s": {},
    }
    peaks = record["matmul_peak_gflops_per_s"]
    for mixed_precision in precisions:
        run = measure(preset, mixed_precision, rounds, steps, matmul_peaks=peaks)
        run.pop("matmul_peak_gflops_per_s")  # kept once, at the top
        record["runs"][COMPUTE_DTYPES[mixed_precision]] = {
            "mixed_precision": mixed_precision,
            **run,
        }
        write_json_atomic(out, record)
        _print_summary(record["machine"]["backend"], preset, mixed_precision, run)
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
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    from dygan_tf.training.backends import select_backend
    from dygan_tf.utils.errors import for_flag

    with for_flag("--backend"):
        select_backend(args.backend)
    import dygan_tf  # noqa: F401 (before Keras: the CPU settings and the Keras objects)

    if args.profile == "gpu":
        precisions = (args.mixed_precision,) if args.mixed_precision else GPU_PROFILE_PRECISIONS
        preset = args.preset or GPU_PROFILE_PRESET
        gpu_profile(args.out, preset, precisions, args.rounds, args.steps)
        return
    args.preset = args.preset or "demo"
    args.mixed_precision = args.mixed_precision or "none"
    record = {
        "machine": machine(),
        "preset": args.preset,
        "mixed_precision": args.mixed_precision,
        "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
        **measure(args.preset, args.mixed_precision, args.rounds, args.steps),
    }
    write_json_atomic(args.out, record)
    _print_summary(record["machine"]["backend"], args.preset, args.mixed_precision, record)


if __name__ == "__main__":
    from dygan_tf.utils.cli import run_main

    run_main(main)
