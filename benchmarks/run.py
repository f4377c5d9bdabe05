"""Runs every benchmark and writes one JSON with their figures against the targets.

Sections: the machine, its matmul peak, DyConv vs Conv2D, the DyGAN train step against
pix2pix (time and FLOP rate), the data pipeline, inference, and GPUs.

    python -m benchmarks.run [--quick | --tiny] --out results.json [--brats-root DIR]
    python -m benchmarks.run --gpu [--tiny] --out gpu.json   # backend_step's GPU profile

Full mode uses the paper preset (a step takes ~50 s on 2 cores, so 2 steps after 1 of
warm-up; the whole run takes tens of minutes); --quick the demo preset at 64 px (a few
minutes); --tiny the test sizes (figures mean nothing). Each section records its wall
seconds; one that raises is recorded as {"error": ...}, the rest still run and the exit
code is 1. The machine's facts, the matmul peak, the FLOP count and the targets are
benchmarks/common.py's; the train steps are timed by benchmarks/backend_step.py (`measure`,
DyGAN and pix2pix alternating in one process), the one train-step benchmark.

pix2pix is the same config with dyconv="none", the "patch" discriminator and
d_dyconv=False. FLOPs per train step are counted from the conv shapes as
B*(3*F_G + 7*F_D), F = 2 x the conv and DyConv-mixing MACs of one forward pass per image.
"""

import dataclasses
import os
import sys
import tempfile
import time
import traceback

from benchmarks.common import PROFILES, TARGETS, device_facts, machine, matmul_peak, verdict
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main
from dygan_tf.utils.errors import UserError

LIBRARY_NAMES = {"tensorflow": "TensorFlow", "jax": "JAX", "torch": "PyTorch"}


def machine_facts(sizes, results, work_dir):
    """The machine (dygan_tf.utils.cpu's facts, the backend's) and the device's name."""
    return {**machine(), **device_facts()}


def matmul_peaks(sizes, results, work_dir):
    """`common.matmul_peak` in float32 and bfloat16 at the profile's n."""
    n, flops = sizes.matmul_n, 2 * sizes.matmul_n**3
    result = {"n": n, "repeats": sizes.matmul_repeats, "flops_per_matmul": flops}
    for dtype in ("float32", "bfloat16"):
        gflops = matmul_peak(dtype, n, sizes.matmul_repeats)
        result[dtype] = {"best_seconds": flops / gflops / 1e9, "gflops_per_s": gflops}
    result["bfloat16_vs_float32"] = (
        result["bfloat16"]["gflops_per_s"] / result["float32"]["gflops_per_s"]
    )
    return result


def dyconv_vs_conv(sizes, results, work_dir, jit_compile=False):
    from benchmarks import dyconv_bench

    return dyconv_bench.run(
        sizes.dyconv_quick, sizes.dyconv_batches, sizes.dyconv_shapes, jit_compile=jit_compile
    )


def train_step_vs_pix2pix(sizes, results, work_dir):
    """backend_step.measure in float32 and mixed bfloat16, with this run's matmul peaks."""
    from benchmarks import backend_step
    from dygan_tf.config.run_config import PIX2PIX_MODEL, get_preset

    peaks = {
        dtype: value["gflops_per_s"]
        for dtype, value in results.get("matmul_peak", {}).items()
        if isinstance(value, dict) and "gflops_per_s" in value
    }
    result = {
        "preset": sizes.preset,
        "depth": get_preset(sizes.preset).override(depth=sizes.depth).model.depth,
        "rounds": sizes.rounds,
        "steps": sizes.steps,
        "warmup": sizes.warmup,
        "pix2pix": PIX2PIX_MODEL,
    }
    for key, precision in (("float32", "none"), ("mixed_bfloat16", "bfloat16")):
        pair = backend_step.measure(
            sizes.preset, precision, sizes.rounds, sizes.steps, peaks, **_step_options(sizes)
        )
        result[key] = {**pair, "matmul_peak_dtype": backend_step.COMPUTE_DTYPES[precision]}
    return result


def _step_options(sizes):
    """`backend_step.measure`'s options at these sizes (a None depth keeps the preset's)."""
    return {"warmup": sizes.warmup, "depth": sizes.depth}


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
    ratio = data["prep_vs_load"]["ratio"]
    return {
        **data,
        "phantom_seconds": phantom_seconds,
        "ratio": ratio,
        **verdict("prep_vs_load", ratio),
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
        **verdict("pipeline", ratio),
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
    """On a GPU (the other sections ran there too): DyConv vs Conv2D and the train steps
    under mixed_float16 with XLA. `--gpu` is the GPU profile."""
    from benchmarks import backend_step
    from dygan_tf.models.precision import dtype_policy
    from dygan_tf.utils import backend

    if backend.device_kind() != "gpu":
        return {"skipped": "no GPU"}
    with dtype_policy("mixed_float16"):
        dyconv = dyconv_vs_conv(sizes, {}, work_dir, jit_compile=True)
    steps = backend_step.measure(
        sizes.preset, "float16", sizes.rounds, sizes.steps, jit_compile=True, **_step_options(sizes)
    )
    return {"device": device_facts()["device_name"], "dyconv_vs_conv": dyconv, "train_step": steps}


SECTIONS = (
    ("machine", machine_facts),
    ("matmul_peak", matmul_peaks),
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
    """`--gpu`: backend_step's GPU profile at the paper's sizes (--tiny: the test sizes)
    on this process's backend (on TensorFlow with the XLA step too); runs that would
    start past `budget_s` are skipped. 1 if a run failed."""
    from benchmarks import backend_step
    from dygan_tf.utils import backend

    name = backend.name()
    if not tiny and backend.device_kind() != "gpu":
        raise UserError(
            f"--gpu: {LIBRARY_NAMES[name]} sees no GPU here (use --gpu --tiny to smoke-test)"
        )
    sizes = PROFILES["tiny" if tiny else "gpu"]
    start = time.perf_counter()
    record = backend_step.gpu_profile(
        out,
        sizes.preset,
        backend_step.GPU_PROFILE_PRECISIONS,
        sizes.rounds,
        sizes.steps,
        xla=name == "tensorflow",
        budget_s=budget_s,
        header={"profile": f"gpu-{sizes.profile}", "sizes": dataclasses.asdict(sizes)},
        matmul_n=sizes.matmul_n,
        **_step_options(sizes),
    )
    record["total_seconds"] = time.perf_counter() - start
    write_json_atomic(out, record)
    failed = [key for key, value in record["runs"].items() if "error" in value]
    print(
        f"wrote {out} in {record['total_seconds']:.0f}s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def _bound(name):
    sense, bound = TARGETS[name]
    return f"{sense} {bound:g}"


def _train_row(pair, label):
    d, p, peak = pair["dygan"], pair["pix2pix"], pair["dygan"]["fraction_of_matmul_peak"]
    return (
        f"{label}: DyGAN {d['achieved_gflops_per_s']:.3g} vs pix2pix "
        f"{p['achieved_gflops_per_s']:.3g} GFLOP/s = {pair['flop_rate_ratio']:.2f}"
        + (f" ({peak:.0%} of peak)" if peak else "")
        + f"; step {d['step_seconds_median']:.3g} vs {p['step_seconds_median']:.3g} s",
        _bound("flop_rate_ratio"),
        pair["met"],
    )


_ROWS = {  # section -> [(figure, target, met or None)]
    "machine": lambda m: [
        (f"{m['cpu_kind']} CPU, {m['cpus']} cores, {' '.join(m['cpu_flags'])}", "", None)
    ],
    "matmul_peak": lambda m: [
        (
            f"n={m['n']}: fp32 {m['float32']['gflops_per_s']:.1f}, bf16 "
            f"{m['bfloat16']['gflops_per_s']:.1f} GFLOP/s",
            "",
            None,
        )
    ],
    "dyconv_vs_conv": lambda d: [
        (
            f"DyConv/Conv2D time {d['geometric_mean_ratio']:.3f} "
            f"(geometric mean of {len(d['shapes'])} shapes)",
            _bound("dyconv_vs_conv"),
            d["met"],
        )
    ],
    "train_step_vs_pix2pix": lambda t: [
        _train_row(t["float32"], "fp32"),
        _train_row(t["mixed_bfloat16"], "bf16"),
    ],
    "prep_vs_load": lambda p: [
        (
            f"shard build {p['prep_vs_load']['build_cases_per_s']:.2f} vs NIfTI load "
            f"{p['prep_vs_load']['load_cases_per_s']:.2f} cases/s = {p['ratio']:.2f}",
            _bound("prep_vs_load"),
            p["met"],
        )
    ],
    "pipeline": lambda p: [
        (
            f"tf.data {p['tfdata_slices_per_s']:.1f} vs train "
            f"{p['train_step_slices_per_s']:.2f} slices/s = {p['ratio']:.1f}",
            _bound("pipeline"),
            p["met"],
        )
    ],
    "inference": lambda i: [
        (
            f"volume {i['volume']['slices_per_s']:.1f} slices/s; batch-3 SavedModel call "
            f"{i['latency_batch3']['savedmodel_signature_s'] * 1e3:.1f} ms",
            "",
            None,
        )
    ],
}


def table(results, sections):
    """The human-readable summary: one line per figure, `sections` (names) in order."""
    lines = [f"{'section':<22} {'figure':<84} {'target':<8} {'met':<4} seconds"]
    for name in sections:
        value = results.get(name)
        if value is None:
            continue
        if "error" in value:
            rows = [(f"ERROR {value['error']}"[:84], "", None)]
        elif "skipped" in value:
            rows = [(f"skipped: {value['skipped']}", "", None)]
        else:
            try:
                rows = _ROWS.get(name, lambda v: [("measured", "", None)])(value)
            except (KeyError, TypeError) as e:  # the JSON is written already; say, don't die
                rows = [(f"(no summary: missing {e})", "", None)]
        for i, (figure, target, met) in enumerate(rows):
            seconds = f"{value['seconds']:.1f}" if i == 0 and "seconds" in value else ""
            met = "" if met is None else ("yes" if met else "NO")
            lines.append(
                f"{name if i == 0 else '':<22} {figure:<84} {target:<8} {met:<4} {seconds}".rstrip()
            )
    return "\n".join(lines)


def main(argv=None):
    parser = ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="demo preset, small sizes (minutes)")
    mode.add_argument("--tiny", action="store_true", help="smoke-test sizes; figures mean nothing")
    parser.add_argument(
        "--gpu",
        action="store_true",
        help="only backend_step's GPU profile, at the paper's sizes (< 8 min on one H100); "
        "with --tiny at the test sizes on any device",
    )
    parser.add_argument(
        "--budget-s", type=float, default=420.0, help="--gpu: seconds after which runs skip"
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
    if args.gpu:
        from dygan_tf.training.backends import select_backend

        if select_backend() == "tensorflow":
            import_tensorflow_quietly()
        import dygan_tf  # noqa: F401 (before Keras: the CPU settings and the Keras objects)

        return run_gpu(args.out, tiny=args.tiny, budget_s=args.budget_s)
    import_tensorflow_quietly()
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
