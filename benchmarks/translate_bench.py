"""Cases per minute of `dygan-translate` over a root of cases, before and after `--batch auto`.

Before: `--batch 4`, each case read in its turn; after: `--batch auto`, the next case
read while one is synthesised; plus each change alone, alternating in one process on
one model.

    python -m benchmarks.translate_bench --out FILE.json [--cases 6] [--slices 64]
        [--preset tiny] [--rounds 2] [--note "busy: ..."]

The cases are T2 phantoms (`inference_bench.phantom_volume`, BraTS's 240x240 plane,
`--slices` axial slices), each missing FLAIR, T1 and T1CE; the generator has the
preset's size and random weights (speed does not depend on the weights). Each run is
`translate_root` into an empty folder, as the command runs it; every run of `auto`
chooses afresh on its first case (the timing is part of its cost). The record holds
the machine (`common.machine`, `lscpu`'s fields), every run's seconds and auto's choices.
"""

import os
import shutil
import subprocess
import tempfile

import numpy as np

from benchmarks.common import alternate, machine
from benchmarks.inference_bench import phantom_volume
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main
from dygan_tf.utils.errors import UserError

# name: (--batch, read ahead); "before" is the command as it was, "after" both changes.
SETTINGS = {
    "before": (4, False),
    "after": ("auto", True),
    "auto_only": ("auto", False),
    "read_ahead_only": (4, True),
}


def lscpu():
    """`lscpu`'s "field: value" lines as a dict ({} where there is no lscpu)."""
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    fields = (line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {key.strip(): value.strip() for key, value in fields}


def write_cases(root, cases, slices):
    """`cases` case folders `bench_NN/bench_NN_t2.nii.gz` of `slices` axial slices."""
    import nibabel as nib

    affine = np.diag([-1.0, -1.0, 1.0, 1.0])
    for index in range(cases):
        cid = f"bench_{index:02d}"
        os.makedirs(os.path.join(root, cid))
        volume = phantom_volume((240, 240, slices), seed=index)
        nib.save(nib.Nifti1Image(volume, affine), os.path.join(root, cid, f"{cid}_t2.nii.gz"))


def run(preset="tiny", cases=6, slices=64, rounds=2, work_dir=None, settings=SETTINGS):
    """Times `translate_root` over the same phantom root in each of `settings`, in
    `rounds` alternating rounds; returns the record."""
    import keras

    from dygan_tf.config.run_config import get_preset
    from dygan_tf.inference.batch_choice import BatchChoice
    from dygan_tf.inference.batch_translation import translate_root
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.models.builders import build_networks

    if cases < 2 or slices < 1 or rounds < 1:
        raise UserError(
            f"expected cases >= 2, slices >= 1, rounds >= 1; found {cases}, {slices}, {rounds}"
        )
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:
        keras.utils.set_random_seed(0)
        generator, _ = build_networks(get_preset(preset).model)
        generator.save(os.path.join(tmp, f"{preset}.keras"))
        predictor = load_predictor(os.path.join(tmp, f"{preset}.keras"))
        root = os.path.join(tmp, "root")
        write_cases(root, cases, slices)
        out = os.path.join(tmp, "out")
        choices = {name: [] for name in settings}

        def translating(name):
            batch, read_ahead = settings[name]

            def once():
                shutil.rmtree(out, ignore_errors=True)
                choice = BatchChoice(batch, verbose=False)
                rows = translate_root(
                    root, out, lambda: predictor, batch_slices=choice, verbose=False,
                    read_ahead=read_ahead,
                )  # fmt: skip
                if any(r["status"] != "written" for r in rows):
                    raise RuntimeError(f"{name}: a case was not written: {rows}")
                if choice.auto:
                    choices[name].append({"chosen": choice.size, **_rates(choice)})

            return once

        translating("before")()  # tracing and first-call allocation: not timed
        times, _ = alternate({name: translating(name) for name in settings}, rounds, 1)
    runs = {}
    for name, seconds in times.items():
        median = float(np.median(seconds))
        runs[name] = {
            "batch": settings[name][0],
            "read_ahead": settings[name][1],
            "seconds": seconds,
            "seconds_median": median,
            "cases_per_minute": 60 * cases / median,
        }
        if choices[name]:
            runs[name]["auto_choices"] = choices[name]
    before = runs["before"]["cases_per_minute"]
    return {
        "preset": preset,
        "image_size": predictor.image_size,
        "cases": cases,
        "case_shape": [240, 240, slices],
        "targets": 3,
        "rounds": rounds,
        "machine": machine(),
        "lscpu": lscpu(),
        "runs": runs,
        "ratio_after_vs_before": runs["after"]["cases_per_minute"] / before,
        "ratios_vs_before": {name: r["cases_per_minute"] / before for name, r in runs.items()},
    }


def _rates(choice):
    return {"slices_per_s": {str(size): rate for size, rate in choice.slices_per_s.items()}}


def main(argv=None):
    parser = ArgumentParser(prog="translate_bench", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the record")
    parser.add_argument("--preset", default="tiny", help="generator size (random weights)")
    parser.add_argument("--cases", type=int, default=6, help="phantom cases in the root")
    parser.add_argument("--slices", type=int, default=64, help="axial slices per case")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds")
    parser.add_argument("--note", default="", help="what else the machine was doing")
    args = parser.parse_args(argv)
    import_tensorflow_quietly()
    result = run(args.preset, args.cases, args.slices, args.rounds)
    result["note"] = args.note
    write_json_atomic(args.out, result)
    runs = result["runs"]
    print(
        ", ".join(f"{name} {r['cases_per_minute']:.1f}" for name, r in runs.items())
        + f" cases/min; after/before {result['ratio_after_vs_before']:.2f}; wrote {args.out}"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
