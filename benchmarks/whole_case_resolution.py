"""Seconds to complete one whole case with the whole-case recipe's generator, by resolution.

    python -m benchmarks.whole_case_resolution --out FILE.json [--sizes 64,96,128,256]
        [--contexts 0,1] [--rounds 2] [--note "busy: ..."]

One phantom case of BraTS's shape (240 x 240 x 155, T1, T1CE and T2 present, FLAIR
missing) is completed by `translate_root`, as `dygan-translate --input ROOT` does, with
the `whole_case` preset's generator (four targets from any others) at each image size
and context K, random weights (speed does not depend on them). Every setting is timed in
alternating rounds in one process after one untimed warm-up; the record holds every
run's seconds, their median, each size's ratio to 96 px, and the machine (`lscpu`).
"""

import os
import shutil
import tempfile

import numpy as np

from benchmarks.common import alternate, machine
from benchmarks.inference_bench import phantom_volume
from benchmarks.translate_bench import lscpu
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import ArgumentParser, import_tensorflow_quietly, run_main
from dygan_tf.utils.errors import UserError

SHAPE = (240, 240, 155)


def write_case(root):
    """One case folder `whole_00` holding T1, T1CE and T2 phantoms (FLAIR missing)."""
    import nibabel as nib

    folder = os.path.join(root, "whole_00")
    os.makedirs(folder)
    for seed, modality in enumerate(("t1", "t1ce", "t2")):
        volume = phantom_volume(SHAPE, seed=seed)
        path = os.path.join(folder, f"whole_00_{modality}.nii.gz")
        nib.save(nib.Nifti1Image(volume, np.diag([-1.0, -1.0, 1.0, 1.0])), path)


def run(sizes=(64, 96, 128, 256), contexts=(0, 1), rounds=2):
    import keras

    from dygan_tf.config.run_config import get_preset
    from dygan_tf.inference.batch_translation import translate_root
    from dygan_tf.inference.predictor import load_predictor
    from dygan_tf.models.builders import build_networks

    with tempfile.TemporaryDirectory() as tmp:
        root = os.path.join(tmp, "root")
        write_case(root)
        predictors = {}
        for size in sizes:
            for k in contexts:
                keras.utils.set_random_seed(0)
                config = get_preset("whole_case").override(image_size=size, context=k)
                generator, _ = build_networks(config.model)
                path = os.path.join(tmp, f"g{size}_k{k}.keras")
                generator.save(path)
                predictors[f"{size}px_k{k}"] = load_predictor(path)

        def completing(name):
            out = os.path.join(tmp, f"out_{name}")

            def once():
                shutil.rmtree(out, ignore_errors=True)
                rows = translate_root(root, out, lambda: predictors[name], verbose=False)
                if [r["status"] for r in rows] != ["written"]:
                    raise RuntimeError(f"{name}: the case was not written: {rows}")

            return once

        for name in predictors:  # tracing and first-call allocation: not timed
            completing(name)()
        times, _ = alternate({name: completing(name) for name in predictors}, rounds, 1)
    runs = {
        name: {"seconds": seconds, "seconds_median": float(np.median(seconds))}
        for name, seconds in times.items()
    }
    for k in contexts:
        base = runs.get(f"96px_k{k}")
        for size in sizes:
            if base:
                entry = runs[f"{size}px_k{k}"]
                entry["ratio_to_96px"] = entry["seconds_median"] / base["seconds_median"]
    return {
        "preset": "whole_case",
        "case_shape": list(SHAPE),
        "present": ["t1", "t1ce", "t2"],
        "synthesised": ["flair"],
        "rounds": rounds,
        "machine": machine(),
        "lscpu": lscpu(),
        "runs": runs,
    }


def _ints(text, flag):
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        raise UserError(f"{flag} {text!r}: expected comma-separated integers") from None
    return values


def main(argv=None):
    parser = ArgumentParser(prog="whole_case_resolution", description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="JSON file for the record")
    parser.add_argument("--sizes", default="64,96,128,256")
    parser.add_argument("--contexts", default="0,1")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--note", default="", help="what else the machine was doing")
    args = parser.parse_args(argv)
    sizes, contexts = _ints(args.sizes, "--sizes"), _ints(args.contexts, "--contexts")
    if args.rounds < 1 or min(sizes) < 16 or min(contexts) < 0:
        raise UserError("--rounds >= 1, --sizes >= 16 and --contexts >= 0 expected")
    import_tensorflow_quietly()
    result = run(sizes, contexts, args.rounds)
    result["note"] = args.note
    write_json_atomic(args.out, result)
    print(
        ", ".join(f"{n} {r['seconds_median']:.1f} s" for n, r in result["runs"].items())
        + f"; wrote {args.out}"
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
