"""The GPU benchmark, sized for a short lease: `python -m benchmarks.run --gpu --out F.json`.

In one process, on the first GPU: the paper-size DyGAN train step against the pix2pix
step (`dygan_tf.config.run_config.as_pix2pix`) in float32 (TF32 matmuls where the GPU has them),
mixed_float16, and mixed_float16 with XLA; DyConv2D against Conv2D at the generator's
decoder shapes (batch 3 and 12, mixed_float16); a float16 and float32 matmul peak; source
slices/s (one slice = its three tasks per step), the projected time of one BraTS epoch
(1400 source slices) and the peak GPU memory of each step. Sections run in a fixed order
under a time budget (`budget_s`, default 7 minutes, tracing included); a section that
would start after it is recorded as skipped, so the run ends in time.

With `--tiny` it runs the same code at the test sizes (a one-level U-Net) on whatever
device there is (the CPU in the tests); the figures then mean nothing.
"""

import gc
import time

BRATS_EPOCH_SLICES = 1400  # 280 training cases x 5 slices


def _memory(device):
    import tensorflow as tf

    if device is None:
        return None
    return tf.config.experimental.get_memory_info(device)["peak"]


def _reset_memory(device):
    import tensorflow as tf

    if device is not None:
        tf.config.experimental.reset_memory_stats(device)


def matmul_peaks(n, repeats=5):
    """Best-of-`repeats` GFLOP/s of an n x n matmul in float32 (TF32 if on) and float16."""
    import tensorflow as tf

    product = tf.function(lambda a, b: tf.matmul(a, b))
    result = {"n": n}
    for name, dtype in (("float32", tf.float32), ("float16", tf.float16)):
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 1)), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 2)), dtype)
        float(product(a, b)[0, 0])
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            float(product(a, b)[0, 0])
            best = min(best, time.perf_counter() - start)
        result[name] = {"gflops_per_s": 2 * n**3 / best / 1e9}
    return result


def train_steps(preset, precision, jit_compile, steps, warmup, device, peaks, depth=None):
    """DyGAN and pix2pix steps timed alike in one configuration (`depth`: the U-Net's,
    None for the preset's)."""
    import keras

    from benchmarks.train_step import time_train_step
    from dygan_tf.config.run_config import as_pix2pix, get_preset

    config = get_preset(preset).override(
        mixed_precision=precision, jit_compile=jit_compile, depth=depth
    )
    timed = {}
    for name, run_config in (("dygan", config), ("pix2pix", as_pix2pix(config))):
        _reset_memory(device)
        timed[name] = time_train_step(run_config, steps, warmup)
        timed[name]["peak_memory_bytes"] = _memory(device)
        step = timed[name]["step_seconds_median"]
        timed[name]["source_slices_per_s"] = 1.0 / step
        timed[name]["brats_epoch_minutes"] = BRATS_EPOCH_SLICES * step / 60
        keras.backend.clear_session()
        gc.collect()
    peak = peaks.get("float16" if precision == "float16" else "float32", {}).get("gflops_per_s")
    for name in timed:
        rate = timed[name]["achieved_gflops_per_s"]
        timed[name]["fraction_of_matmul_peak"] = rate / peak if peak else None
    rate = timed["dygan"]["achieved_gflops_per_s"] / timed["pix2pix"]["achieved_gflops_per_s"]
    return timed | {
        "depth": config.model.depth,
        "mixed_precision": precision,
        "jit_compile": jit_compile,
        "flop_rate_ratio": rate,
        "step_time_ratio": (
            timed["dygan"]["step_seconds_median"] / timed["pix2pix"]["step_seconds_median"]
        ),
        "target": 0.8,
        "met": rate >= 0.8,
    }


def run(sizes, budget_s=420.0, log=None):
    """The GPU figures at `sizes` (a benchmarks.sizes.Sizes) within `budget_s` seconds."""
    import tensorflow as tf

    from benchmarks import dyconv_bench
    from dygan_tf.models.precision import dtype_policy

    start = time.perf_counter()
    gpus = tf.config.list_logical_devices("GPU")
    device = "GPU:0" if gpus else None
    result = {
        "devices": [d.name for d in gpus] or ["CPU (no GPU: figures mean nothing)"],
        "tensor_float_32": tf.config.experimental.tensor_float_32_execution_enabled(),
        "budget_s": budget_s,
        "brats_epoch_slices": BRATS_EPOCH_SLICES,
    }
    if gpus:
        details = tf.config.experimental.get_device_details(
            tf.config.list_physical_devices("GPU")[0]
        )
        result["device_details"] = {k: str(v) for k, v in details.items()}
    peaks = {}
    sections = [("matmul_peak", lambda: matmul_peaks(sizes.matmul_n))]
    for key, precision, jit in (
        ("float32", "none", False),
        ("mixed_float16", "float16", False),
        ("mixed_float16_xla", "float16", True),
    ):
        sections.append(
            (
                f"train_step_{key}",
                lambda p=precision, j=jit: train_steps(
                    sizes.preset, p, j, sizes.steps, sizes.warmup, device, peaks, sizes.depth
                ),
            )
        )

    def dyconv():
        with dtype_policy("mixed_float16"):
            out = dyconv_bench.run(sizes.dyconv_quick, sizes.dyconv_batches, sizes.dyconv_shapes)
        return out | {"mixed_precision": "float16", "met": out["geometric_mean_ratio"] <= 1.15}

    sections.append(("dyconv_vs_conv_float16", dyconv))
    for name, section in sections:
        elapsed = time.perf_counter() - start
        if elapsed > budget_s:
            result[name] = {"skipped": f"time budget: {elapsed:.0f} s of {budget_s:.0f} s spent"}
            continue
        if log:
            print(f"[benchmarks.run --gpu] {name} ...", file=log, flush=True)
        t0 = time.perf_counter()
        try:
            value = section()
        except Exception as e:  # noqa: BLE001 (recorded; the others still run)
            value = {"error": f"{type(e).__name__}: {e}"}
        value["seconds"] = time.perf_counter() - t0
        result[name] = value
        if name == "matmul_peak" and "error" not in value:
            peaks.update(value)
    result["total_seconds"] = time.perf_counter() - start
    return result
