"""Runs every benchmark and writes one JSON with their figures against the targets.

Sections: the machine, its matmul peak, DyConv vs Conv2D, the DyGAN train step against
pix2pix (time and FLOP rate), the data pipeline, inference, and GPUs.

    python -m benchmarks.run [--quick | --tiny] --out results.json [--brats-root DIR]
    python -m benchmarks.run --gpu [--tiny] --out gpu.json   # benchmarks/gpu_bench.py

Full mode uses the paper preset (a step takes ~50 s on 2 cores, so steps=2, warmup=1; the
whole run takes tens of minutes); --quick the demo preset at 64 px (a few minutes); --tiny
the test sizes (figures mean nothing). Each section records its wall seconds; one that
raises is recorded as {"error": ...}, the rest still run and the exit code is 1.

pix2pix is the same config with dyconv="none", the "patch" discriminator and
d_dyconv=False. FLOPs per train step are counted from the conv shapes as
B*(3*F_G + 7*F_D), F = 2 x the conv and DyConv-mixing MACs of one forward pass per image
(derivation in benchmarks/train_step.py). Targets: DyConv/Conv2D time <= 1.15,
DyGAN/pix2pix FLOP rate >= 0.8 (stretch 0.9), tf.data/train-step slices/s >= 20, shard build/NIfTI
load rate >= 0.8.
"""

import dataclasses
import gc
import os
import platform
import sys
import tempfile
import time
import traceback

from benchmarks.sizes import PROFILES
from benchmarks.summary import table
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main
from dygan_tf.utils.cpu import describe_onednn
from dygan_tf.utils.errors import UserError

CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile")
# The DyConv and data targets live in dyconv_bench and data_bench; these two are new here.
TARGETS = {"flop_rate_ratio": 0.8, "flop_rate_stretch": 0.9, "pipeline_ratio": 20.0}


def machine(sizes, results, work_dir):
    import keras
    import numpy as np
    import tensorflow as tf

    cpuinfo = {}  # the first processor's fields
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                cpuinfo.setdefault(key.strip(), value.strip())
    model = cpuinfo.get("model name") or platform.processor() or platform.machine()
    flags = set(cpuinfo.get("flags", "").split())
    return {
        "cpu_model": model,
        "cpu_count": os.cpu_count(),
        "affinity_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "cpu_flags": {flag: flag in flags for flag in CPU_FLAGS},
        "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        # The CPU kind, TF_ENABLE_ONEDNN_OPTS, whether oneDNN is on, and who decided it
        # (dygan_tf per CPU kind, the user, or TensorFlow's default): dygan_tf.utils.cpu.
        "onednn": describe_onednn(flags=flags),
        "gpus": [d.name for d in tf.config.list_physical_devices("GPU")],
    }


def matmul_peak(sizes, results, work_dir):
    """Best-of-`repeats` seconds of one n x n matmul, as GFLOP/s (2 n^3 FLOPs)."""
    import tensorflow as tf

    n, flops = sizes.matmul_n, 2 * sizes.matmul_n**3
    result = {"n": n, "repeats": sizes.matmul_repeats, "flops_per_matmul": flops}
    product = tf.function(lambda a, b: tf.matmul(a, b))
    for name, dtype in (("float32", tf.float32), ("bfloat16", tf.bfloat16)):
        a = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 1)), dtype)
        b = tf.cast(tf.random.stateless_normal((n, n), seed=(0, 2)), dtype)
        float(product(a, b)[0, 0])  # tracing is not throughput
        times = []
        for _ in range(sizes.matmul_repeats):
            start = time.perf_counter()
            float(product(a, b)[0, 0])
            times.append(time.perf_counter() - start)
        result[name] = {"best_seconds": min(times), "gflops_per_s": flops / min(times) / 1e9}
    result["bfloat16_vs_float32"] = (
        result["bfloat16"]["gflops_per_s"] / result["float32"]["gflops_per_s"]
    )
    return result


def dyconv_vs_conv(sizes, results, work_dir, jit_compile=False):
    from benchmarks import dyconv_bench

    result = dyconv_bench.run(
        sizes.dyconv_quick, sizes.dyconv_batches, sizes.dyconv_shapes, jit_compile=jit_compile
    )
    result["met"] = result["geometric_mean_ratio"] <= result["target"]
    return result


def _versus_pix2pix(config, sizes, peak_gflops):
    """DyGAN and pix2pix train steps timed alike; pix2pix is the same U-Net with static
    convolutions and the PatchGAN discriminator."""
    from benchmarks.train_step import time_train_step
    from dygan_tf.config.run_config import as_pix2pix

    pix2pix = as_pix2pix(config)
    timed = {}
    for name, run_config in (("dygan", config), ("pix2pix", pix2pix)):
        timed[name] = time_train_step(run_config, sizes.steps, sizes.warmup)
        gc.collect()  # free the last model (cycles) before building the next: ~2 GB at paper size
        timed[name]["fraction_of_matmul_peak"] = (
            timed[name]["achieved_gflops_per_s"] / peak_gflops if peak_gflops else None
        )
    rate = timed["dygan"]["achieved_gflops_per_s"] / timed["pix2pix"]["achieved_gflops_per_s"]
    return {
        **timed,
        "flop_rate_ratio": rate,
        "target": TARGETS["flop_rate_ratio"],
        "met": rate >= TARGETS["flop_rate_ratio"],
        "stretch": TARGETS["flop_rate_stretch"],
        "stretch_met": rate >= TARGETS["flop_rate_stretch"],
        "step_time_ratio": (
            timed["dygan"]["step_seconds_median"] / timed["pix2pix"]["step_seconds_median"]
        ),
    }


def train_step_vs_pix2pix(sizes, results, work_dir):
    from dygan_tf.config.run_config import PIX2PIX_MODEL, get_preset

    config = get_preset(sizes.preset).override(depth=sizes.depth)
    peak = results.get("matmul_peak", {})
    result = {
        "preset": sizes.preset,
        "depth": config.model.depth,
        "steps": sizes.steps,
        "warmup": sizes.warmup,
        "pix2pix": PIX2PIX_MODEL,
    }
    for key, precision, peak_dtype in (
        ("float32", "none", "float32"),
        ("mixed_bfloat16", "bfloat16", "bfloat16"),
    ):
        peak_gflops = peak.get(peak_dtype, {}).get("gflops_per_s")
        result[key] = _versus_pix2pix(
            config.override(mixed_precision=precision), sizes, peak_gflops
        )
        result[key]["matmul_peak_dtype"] = peak_dtype
    return result


def prep_vs_load(sizes, results, work_dir):
    from benchmarks import data_bench
    from dygan_tf.data import phantom

    workers = sizes.data_workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        root, phantom_seconds = sizes.brats_root, None
        if root is None:
            root, start = os.path.join(tmp, "phantom"), time.perf_counter()
            hgg, lgg = phantom.split_grades(sizes.data_cases)
            phantom.build_phantom(root, hgg, lgg, seed=0, workers=workers, verbose=False)
            phantom_seconds = time.perf_counter() - start
        data = data_bench.run(
            root,
            cases=sizes.data_cases,
            image_size=sizes.data_image_size,
            workers=workers,
            elements=sizes.data_elements,
            work_dir=tmp,
        )
    ratio, target = data["prep_vs_load"]["ratio"], data["prep_vs_load"]["target_ratio"]
    return {
        **data,
        "phantom_seconds": phantom_seconds,
        "ratio": ratio,
        "target": target,
        "met": ratio >= target,
    }


def pipeline(sizes, results, work_dir):
    """tf.data slices/s against the slices/s the fp32 DyGAN step consumes (1 per step)."""
    data, train = results.get("prep_vs_load", {}), results.get("train_step_vs_pix2pix", {})
    if "tfdata" not in data or "float32" not in train:
        raise RuntimeError(
            "needs the prep_vs_load and train_step_vs_pix2pix results, and one of them failed"
        )
    step = train["float32"]["dygan"]
    tfdata, consumed = data["tfdata"]["slices_per_s"], 1.0 / step["step_seconds_median"]
    ratio = tfdata / consumed
    return {
        "tfdata_slices_per_s": tfdata,
        "train_step_slices_per_s": consumed,
        "ratio": ratio,
        "target": TARGETS["pipeline_ratio"],
        "met": ratio >= TARGETS["pipeline_ratio"],
        "data_image_size": data["image_size"],
        "train_image_size": step["image_size"],
    }


def inference(sizes, results, work_dir):
    from benchmarks import inference_bench

    return inference_bench.run(
        sizes.inference_preset,
        None,
        tuple(sizes.inference_shape),
        sizes.inference_batch,
        sizes.inference_repeats,
        work_dir,
    )


def gpu(sizes, results, work_dir):
    import tensorflow as tf

    devices = [d.name for d in tf.config.list_physical_devices("GPU")]
    if not devices:
        return {"skipped": "no GPU"}
    return {"devices": devices, **gpu_measurements(sizes, work_dir)}


def gpu_measurements(sizes, work_dir=None):
    """DyConv vs Conv2D and the train steps under mixed_float16 with XLA."""
    from dygan_tf.config.run_config import get_preset
    from dygan_tf.models.precision import dtype_policy

    with dtype_policy("mixed_float16"):
        dyconv = dyconv_vs_conv(sizes, {}, work_dir, jit_compile=True)
    config = get_preset(sizes.preset).override(mixed_precision="float16", jit_compile=True)
    return {"dyconv_vs_conv": dyconv, "train_step_vs_pix2pix": _versus_pix2pix(config, sizes, None)}


SECTIONS = (
    ("machine", machine),
    ("matmul_peak", matmul_peak),
    ("dyconv_vs_conv", dyconv_vs_conv),
    ("train_step_vs_pix2pix", train_step_vs_pix2pix),
    ("prep_vs_load", prep_vs_load),
    ("pipeline", pipeline),
    ("inference", inference),
    ("gpu", gpu),
)


def run(sizes="quick", work_dir=None, sections=None, log=None):
    """Runs `sections` ((name, function), ...; default all) at `sizes` (a Sizes or a profile
    name); returns the results dict. A section that raises becomes {"error": ...}; progress
    lines go to `log` (stderr)."""
    sizes = PROFILES[sizes] if isinstance(sizes, str) else sizes
    log = log or sys.stderr
    results = {"profile": sizes.profile, "sizes": dataclasses.asdict(sizes)}
    start_all = time.perf_counter()
    for name, section in sections or SECTIONS:
        print(f"[benchmarks.run] {name} ...", file=log, flush=True)
        start = time.perf_counter()
        try:
            value = section(sizes, results, work_dir)
        except Exception as e:  # noqa: BLE001 (recorded; the run continues and exits 1)
            traceback.print_exc(file=log)
            value = {"error": f"{type(e).__name__}: {e}"}
        if "skipped" not in value:
            value["seconds"] = time.perf_counter() - start
        results[name] = value
        print(
            f"[benchmarks.run] {name}: {'FAILED' if 'error' in value else 'done'} in "
            f"{time.perf_counter() - start:.1f}s",
            file=log,
            flush=True,
        )
    results["total_seconds"] = time.perf_counter() - start_all
    return results


def failed_sections(results):
    return [k for k, v in results.items() if isinstance(v, dict) and "error" in v]


def run_gpu(out, tiny=False, budget_s=420.0):
    """`--gpu`: the machine and benchmarks.gpu_bench in one JSON; 1 if a section failed."""
    import tensorflow as tf

    from benchmarks import gpu_bench

    if not tiny and not tf.config.list_physical_devices("GPU"):
        raise UserError("--gpu: TensorFlow sees no GPU here (use --gpu --tiny to smoke-test)")
    sizes = PROFILES["tiny" if tiny else "gpu"]
    results = {"profile": f"gpu-{sizes.profile}", "sizes": dataclasses.asdict(sizes)}
    results["machine"] = machine(sizes, results, None)
    results["gpu"] = gpu_bench.run(sizes, budget_s, log=sys.stderr)
    write_json_atomic(out, results)
    failed = [k for k, v in results["gpu"].items() if isinstance(v, dict) and "error" in v]
    for key in ("float32", "mixed_float16", "mixed_float16_xla"):
        step = results["gpu"].get(f"train_step_{key}", {})
        if "dygan" in step:
            print(
                f"{key}: DyGAN {step['dygan']['step_seconds_median']:.3g} s vs pix2pix "
                f"{step['pix2pix']['step_seconds_median']:.3g} s per step; FLOP-rate ratio "
                f"{step['flop_rate_ratio']:.2f}; {step['dygan']['source_slices_per_s']:.2f} "
                f"source slices/s"
            )
    print(
        f"wrote {out} in {results['gpu']['total_seconds']:.0f}s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="demo preset, small sizes (minutes)")
    mode.add_argument("--tiny", action="store_true", help="smoke-test sizes; figures mean nothing")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="only the GPU benchmark, at the paper's sizes (< 8 min on one H100); "
        "with --tiny at the test sizes on any device",
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="--gpu: seconds after which sections skip"
    )
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument(
        "--brats-root",
        help="BraTS root for the data sections, all its cases (default: a fresh phantom)",
    )
    parser.add_argument("--work-dir", help="folder for temporary files (default: the system's)")
    args = parser.parse_args(argv)
    for flag, path in (("--brats-root", args.brats_root), ("--work-dir", args.work_dir)):
        if path is not None and not os.path.isdir(path):
            parser.error(f"{flag}: no such folder: {path}")
    if args.gpu and args.quick:
        parser.error("--gpu runs the paper's sizes (or the test sizes with --tiny), not --quick")
    import_tensorflow_quietly()
    if args.gpu:
        return run_gpu(args.out, tiny=args.tiny, budget_s=args.budget_s)
    sizes = PROFILES["tiny" if args.tiny else "quick" if args.quick else "full"]
    if args.brats_root:
        sizes = dataclasses.replace(sizes, brats_root=args.brats_root)
    results = run(sizes, args.work_dir)
    write_json_atomic(args.out, results)
    print(table(results, [name for name, _ in SECTIONS]))
    failed = failed_sections(results)
    print(
        f"wrote {args.out} in {results['total_seconds']:.0f}s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
