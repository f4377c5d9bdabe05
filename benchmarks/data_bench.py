"""Data pipeline throughput: building shards, and tf.data slices/s from make_dataset.

Building shards is set against just loading the NIfTI files; tf.data's rate is
make_dataset's slices/s.

    python -m benchmarks.data_bench --out FILE.json [--brats-root DIR | --cases 8]
"""

import concurrent.futures
import multiprocessing
import os
import tempfile
import time

import numpy as np

from benchmarks.common import TARGETS
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, run_main
from dygan_tf.utils.errors import UserError


def _load_case(files):
    """The baseline: read every volume of a case with nibabel, nothing else (as stored,
    no float copy: the cheapest possible load)."""
    import nibabel as nib

    return sum(float(np.asanyarray(nib.load(f).dataobj)[0, 0, 0]) for f in files)


def load_only(brats_root, workers):
    """Seconds to load every case's volumes with `workers` processes (spawned, as in
    the builder)."""
    from dygan_tf.data.cases import case_files, discover_cases

    found = discover_cases(brats_root)
    jobs = [list(case_files(c).values()) for c in found]
    start = time.perf_counter()
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(workers, mp_context=context) as pool:
        list(pool.map(_load_case, jobs))
    return len(found), time.perf_counter() - start


def run(
    brats_root=None,
    cases=8,
    image_size=256,
    workers=None,
    elements=300,
    compression="gzip",
    work_dir=None,
):
    """Runs both benchmarks; returns a dict of the measured numbers."""
    from dygan_tf.data import phantom, pipeline, shards
    from dygan_tf.data.cases import discover_cases

    workers = workers or os.cpu_count() or 1
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        if brats_root is None:
            brats_root = os.path.join(tmp, "phantom")
            hgg, lgg = phantom.split_grades(cases)
            phantom.build_phantom(brats_root, hgg, lgg, seed=0, workers=workers, verbose=False)
        n_cases, load_seconds = load_only(brats_root, workers)
        out = os.path.join(tmp, "records")
        hgg = sum(1 for c in discover_cases(brats_root) if c["grade"] == "HGG")
        start = time.perf_counter()
        manifest = shards.build(
            brats_root,
            out,
            image_size=image_size,
            train_hgg=hgg,
            train_lgg=0,
            workers=workers,
            compression=compression,
            verbose=False,
        )
        build_seconds = time.perf_counter() - start

        ds = pipeline.make_dataset(out, "train", repeat=True, shuffle=64, seed=0)
        iterator = iter(ds)
        next(iterator)  # graph building and the first file open are not throughput
        start = time.perf_counter()
        for _ in range(elements):
            next(iterator)
        read_seconds = time.perf_counter() - start
    load_rate, build_rate = n_cases / load_seconds, n_cases / build_seconds
    return {
        "cases": n_cases,
        "workers": workers,
        "image_size": image_size,
        "compression": compression,
        "prep_vs_load": {
            "load_cases_per_s": load_rate,
            "build_cases_per_s": build_rate,
            "ratio": build_rate / load_rate,
            "target_ratio": TARGETS["prep_vs_load"][1],
        },
        "tfdata": {
            "elements": elements,
            "slices_per_s": elements / read_seconds,
            "rows_per_s": 3 * elements / read_seconds,
            "records": manifest["splits"]["train"]["records"],
        },
    }


def main(argv=None):
    parser = ArgumentParser(prog="data_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the results")
    parser.add_argument("--brats-root", help="BraTS root (default: a fresh phantom)")
    parser.add_argument("--cases", type=int, default=8, help="phantom cases")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--workers", type=int)
    parser.add_argument("--elements", type=int, default=300)
    parser.add_argument("--compression", choices=("gzip", "none"), default="gzip")
    args = parser.parse_args(argv)
    if args.cases < 2 or args.elements < 1:
        raise UserError("data_bench: expected --cases >= 2 and --elements >= 1")
    result = run(
        args.brats_root, args.cases, args.image_size, args.workers, args.elements, args.compression
    )
    write_json_atomic(args.out, result)
    p, t = result["prep_vs_load"], result["tfdata"]
    print(
        f"build {p['build_cases_per_s']:.2f} cases/s vs load {p['load_cases_per_s']:.2f} "
        f"cases/s (ratio {p['ratio']:.2f}); tf.data {t['slices_per_s']:.1f} slices/s"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
