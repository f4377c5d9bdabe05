"""Whole cases, as BraSyn sets them: each modality of a case removed in turn, completed by
a model, scored on the whole volume beside copy-source and the intensity LUT.

    python -m research.whole_volume --model LABEL=RUN_DIR [--model ...] \
        [--test-set NAME=BRATS_ROOT ...] [--cases 10] [--lut-from TRAIN_SHARDS] \
        [--baselines LABEL] [--work DIR] [--out docs/results/whole-volume/records]

For each test set the first `--cases` case ids (sorted) are fixed. For every modality m
a root of those cases without m is made (links to the other three files), and each model
completes it with `translate_root`, as `dygan-translate --input ROOT` does: a
multi-source model synthesises m from the three others; a single-source model (the
paper's, T2 -> FLAIR, T1, T1CE) from its source, and has nothing to offer for its own
source. The predictions are scored by `evaluate_volumes` (ours per region, BraSyn's SSIM,
through-plane consistency; copy-source and the LUT fitted on `--lut-from`'s training
volumes). Per model and test set it writes `<out>/<label>/<set>/`: per_case.csv,
summary.json (every volume's row) and timing.json (seconds per pass of every case, the
model's loading apart, and the machine). A model and set already recorded is skipped.
"""

import json
import os
import platform
import shutil
import subprocess
import time

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cache import cache_root
from dygan_tf.utils.cli import ArgumentParser, command, import_tensorflow_quietly
from dygan_tf.utils.errors import UserError

BENCHMARK = "phantom-v2"
TEST_SETS = ("test_mni", "test_colin27")
CASES = 10


def _pairs(values, flag):
    out = {}
    for value in values:
        name, sep, path = value.partition("=")
        if not sep or not name or not path:
            raise UserError(f"{flag} {value!r}: expected NAME=PATH")
        if not os.path.exists(os.path.expanduser(path)):
            raise UserError(f"{flag} {value!r}: {path} does not exist")
        out[name] = os.path.expanduser(path)
    return out


def fixed_cases(root, count):
    """The first `count` cases of a BraTS root by case id: {case id: {modality: path}}."""
    from dygan_tf.data.cases import check_case, discover_cases

    cases = sorted(discover_cases(root), key=lambda c: c["case_id"])
    if len(cases) < count:
        raise UserError(f"{root}: {len(cases)} cases, fewer than --cases {count}")
    return {c["case_id"]: check_case(c) for c in cases[:count]}


def dropped_roots(cases, work):
    """{modality: a root of `cases` without it} (symbolic links to the real files)."""
    roots = {}
    for missing in MODALITIES:
        root = os.path.join(work, f"without_{missing}")
        for cid, files in cases.items():
            folder = os.path.join(root, cid)
            os.makedirs(folder, exist_ok=True)
            for m in MODALITIES:
                link = os.path.join(folder, os.path.basename(files[m]))
                if m != missing and not os.path.lexists(link):
                    os.symlink(os.path.abspath(files[m]), link)
        roots[missing] = root
    return roots


def _machine():
    flags, name = [], platform.processor()
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=False).stdout
        for line in text.splitlines():
            if line.startswith("Flags:"):
                flags = [f for f in line.split()[1:] if f.startswith(("avx", "amx", "fma"))]
            if line.startswith("Model name:"):
                name = line.split(":", 1)[1].strip()
    except OSError:
        pass
    return {"cpu": name, "cpu_flags": flags, "cores": os.cpu_count()}


def complete(label, run_dir, roots, pred_dir):
    """Completes every dropped root a model can; returns the timing record."""
    from dygan_tf.inference.batch_translation import translate_root
    from dygan_tf.inference.predictor import load_predictor

    start = time.perf_counter()
    predictor = load_predictor(run_dir)
    loading = time.perf_counter() - start
    trained = set((predictor.model_card or {}).get("training", {}).get("targets", MODALITIES))
    passes = {}
    for missing, root in roots.items():
        if missing not in trained:
            passes[missing] = {"skipped": f"{label} was not trained to synthesise {missing}"}
            continue
        start = time.perf_counter()
        rows = translate_root(root, pred_dir, lambda: predictor, verbose=False)
        seconds = time.perf_counter() - start
        bad = [r for r in rows if r["status"] not in ("written", "skipped")]
        if bad:
            raise UserError(
                f"{label} on {root}: {bad[0]['case']}: {bad[0]['status']} {bad[0]['why']}"
            )
        passes[missing] = {
            "seconds": seconds,
            "cases": len(rows),
            "per_case_s": seconds / len(rows),
        }
    return {
        "model": label,
        "run": os.path.abspath(run_dir),
        "inputs": predictor.inputs,
        "context": predictor.context,
        "image_size": predictor.image_size,
        "loading_s": loading,
        "passes": passes,
        "machine": _machine(),
        "load_average_1min": os.getloadavg()[0],
    }


def main(argv=None):
    parser = ArgumentParser(prog="research.whole_volume", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", required=True, help="LABEL=RUN_DIR")
    parser.add_argument("--test-set", action="append", default=[], help="NAME=BRATS_ROOT")
    parser.add_argument("--cases", type=int, default=CASES)
    parser.add_argument(
        "--baselines",
        help="LABEL of the model whose records carry copy-source and the LUT (the same "
        "for every model on these cases; default: every model's)",
    )
    parser.add_argument("--lut-from", help="training shard folder (default: the benchmark's)")
    parser.add_argument("--work", default=os.path.join(cache_root(), "whole-volume"))
    parser.add_argument("--out", default="docs/results/whole-volume/records")
    args = parser.parse_args(argv)
    bench = os.path.join(cache_root(), BENCHMARK)
    sets = _pairs(args.test_set, "--test-set") or {
        name: os.path.join(bench, name, "volumes") for name in TEST_SETS
    }
    lut_from = args.lut_from or os.path.join(bench, "train", "shards-64px")
    models = _pairs(args.model, "--model")
    import_tensorflow_quietly()
    from dygan_tf.evaluation.volumes import evaluate_volumes

    for name, root in sets.items():
        cases = fixed_cases(root, args.cases)
        roots = dropped_roots(cases, os.path.join(args.work, "inputs", name))
        for label, run_dir in models.items():
            out = os.path.join(args.out, label, name)
            if os.path.exists(os.path.join(out, "timing.json")):
                print(f"{label} on {name}: recorded in {out}, skipped")
                continue
            pred_dir = os.path.join(args.work, "predictions", label, name)
            shutil.rmtree(pred_dir, ignore_errors=True)
            timing = complete(label, run_dir, roots, pred_dir)
            # The baselines are the same for every model: scored with the first that
            # completes every modality (a multi-source model), or else with each.
            first = args.baselines == label or (args.baselines is None)
            summary = evaluate_volumes(
                pred_dir, root, out, lut_from=lut_from, verbose=False, baselines=first
            )
            os.remove(os.path.join(out, "summary.md"))  # summary.json holds it all
            timing |= {"test_set": name, "cases": sorted(cases), "lut_from": lut_from}
            write_json_atomic(os.path.join(out, "timing.json"), timing)
            brain = {t: round(e["psnr_brain"]["mean"], 2) for t, e in summary["targets"].items()}
            print(f"{label} on {name}: brain PSNR {json.dumps(brain)}; wrote {out}", flush=True)


cli = command(main)

if __name__ == "__main__":
    cli()
