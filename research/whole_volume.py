"""Whole cases, as BraSyn sets them: each modality of a case removed in turn, completed by
a model, scored on the whole volume beside copy-source and the intensity LUT.

    python -m research.whole_volume --model LABEL=RUN_DIR [--model ...] \
        [--test-set NAME=BRATS_ROOT ...] [--cases 10] [--lut-from TRAIN_SHARDS] \
        [--baselines LABEL] [--work DIR] [--out docs/results/whole-volume/records]
    python -m research.whole_volume --table [--out docs/results/whole-volume/records]

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

`--table` reads those records (labels `<row>_seed<N>`) into table.json and table.md
beside the records folder: per test set, target and row, the mean over seeds of each
seed's mean over the cases (± the SD over seeds), the baselines, each seed's margin over
the LUT, and the paired difference of the context rows (K = 1 minus K = 0) by seed.
"""

import glob
import json
import os
import re
import shutil
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


def complete(label, run_dir, roots, pred_dir):
    """Completes every dropped root a model can; returns the timing record."""
    from benchmarks.common import machine
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
        "machine": machine(),
        "load_average_1min": os.getloadavg()[0],
    }


METRICS = (  # (summary column, shown as, digits)
    ("psnr_brain", "brain PSNR (dB)", 2),
    ("psnr_tumour", "tumour PSNR (dB)", 2),
    ("ssim_brain", "brain SSIM", 4),
    ("brasyn_ssim_tumour", "BraSyn SSIM tumour", 4),
    ("brasyn_ssim_non_tumour", "BraSyn SSIM non-tumour", 4),
    ("through_plane_excess", "through-plane excess", 4),
)
PAIRS = (("recipe_k1", "recipe_k0"),)  # (a, b): a − b paired by seed


def read_records(out):
    """{(row, seed): {test set: (summary, timing)}} of the records under `out`."""
    found = {}
    for path in sorted(glob.glob(os.path.join(out, "*", "*", "timing.json"))):
        folder = os.path.dirname(path)
        label, test_set = os.path.basename(os.path.dirname(folder)), os.path.basename(folder)
        match = re.fullmatch(r"(.+)_seed(\d+)", label)
        if match is None:
            continue
        with open(path, encoding="utf-8") as f:
            timing = json.load(f)
        with open(os.path.join(folder, "summary.json"), encoding="utf-8") as f:
            summary = json.load(f)
        found.setdefault((match[1], int(match[2])), {})[test_set] = (summary, timing)
    return found


def _stat(values):
    from research.paired import mean_sd

    mean, sd, n = mean_sd(values)
    return {"mean": mean, "sd": sd, "n": n, "values": list(values)}


def build_table(records):
    """The table's dict: rows and baselines per test set and target, margins, pairs."""
    from research.paired import paired_difference

    sets = sorted({name for by_set in records.values() for name in by_set})
    table = {}
    for name in sets:
        entry = {"rows": {}, "baselines": {}, "margin_over_lut": {}, "pairs": {}}
        per_seed = {}  # row -> target -> column -> {seed: value}
        for (row, seed), by_set in sorted(records.items()):
            if name not in by_set:
                continue
            summary, timing = by_set[name]
            for target, stats in summary["targets"].items():
                for column, *_ in METRICS:
                    value = stats[column]["mean"]
                    if value is not None:
                        cells = per_seed.setdefault(row, {}).setdefault(target, {})
                        cells.setdefault(column, {})[seed] = value
            seconds = sum(p["per_case_s"] for p in timing["passes"].values() if "per_case_s" in p)
            per_seed[row].setdefault("_time", {}).setdefault("per_case_s", {})[seed] = seconds
            for method, reference in summary["baselines"].items():
                for target, stats in reference["targets"].items():
                    entry["baselines"].setdefault(target, {})[method] = {
                        column: stats[column]["mean"] for column, *_ in METRICS
                    } | {"source": summary["baseline_sources"][target]}
        for row, targets in per_seed.items():
            entry["rows"][row] = {
                target: {column: _stat(list(v.values())) | {"seeds": sorted(v)}
                         for column, v in columns.items()}
                for target, columns in targets.items()
            }  # fmt: skip
            for target, columns in targets.items():
                lut = entry["baselines"].get(target, {}).get("intensity_lut")
                if lut and target != "_time":
                    margin = {s: v - lut["psnr_brain"] for s, v in columns["psnr_brain"].items()}
                    entry["margin_over_lut"].setdefault(row, {})[target] = margin
        for a, b in PAIRS:
            for target in per_seed.get(a, {}):
                if target != "_time" and target in per_seed.get(b, {}):
                    entry["pairs"].setdefault(f"{a} - {b}", {})[target] = {
                        column: paired_difference(per_seed[a][target][column],
                                                  per_seed[b][target][column])
                        for column in ("psnr_brain", "psnr_tumour", "through_plane_excess")
                    }  # fmt: skip
        table[name] = entry
    return table


def _cell(stat, digits):
    if stat is None or stat["mean"] is None:
        return "—"
    if stat["sd"] is None:
        return f"{stat['mean']:.{digits}f} (1 seed)"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def table_markdown(table):
    """table.md: per test set, the rows beside the baselines, margins and pairs."""
    from dygan_tf.utils.markdown import table_lines

    lines = []
    header = ["target", "row", "seeds", *(shown for _, shown, _ in METRICS), "s / case"]
    for name, entry in table.items():
        lines += [f"## {name}", ""]
        body = []
        for target in MODALITIES:
            for row, targets in entry["rows"].items():
                if target not in targets:
                    continue
                cells = targets[target]
                seeds = ",".join(map(str, cells["psnr_brain"]["seeds"]))
                time_cell = _cell(targets["_time"]["per_case_s"], 1)
                body.append([target, row, seeds] + [_cell(cells.get(c), d) for c, _, d in METRICS]
                            + [time_cell])  # fmt: skip
            for method, values in entry["baselines"].get(target, {}).items():
                shown = ["—" if values[c] is None else f"{values[c]:.{d}f}" for c, _, d in METRICS]
                label = f"{method} ({values['source']} → {target})"
                body.append([target, label, "—", *shown, "—"])
        lines += table_lines(header, body) + [""]
        margins = [
            [row, target, ", ".join(f"{m:+.2f}" for _, m in sorted(by_seed.items()))]
            for row, targets in entry["margin_over_lut"].items()
            for target, by_seed in targets.items()
        ]
        if margins:
            lines += ["Brain PSNR minus the LUT's, each seed (dB):", ""]
            lines += table_lines(["row", "target", "seeds 0, 1, 2, ..."], margins) + [""]
        for pair, targets in entry["pairs"].items():
            body = []
            for target, columns in targets.items():
                cells = []
                for column in ("psnr_brain", "psnr_tumour", "through_plane_excess"):
                    d = columns[column]
                    digits = 4 if column == "through_plane_excess" else 2
                    if d["ci"] is None:
                        cells.append(
                            "—" if d["mean"] is None else f"{d['mean']:+.{digits}f} (1 seed)"
                        )
                    else:
                        low, high = d["ci"]
                        cells.append(
                            f"{d['mean']:+.{digits}f} [{low:+.{digits}f}, {high:+.{digits}f}]"
                        )
                body.append([target, *cells, str(d["n"])])
            lines += [f"Paired by seed, {pair} (mean, 95 % t interval):", ""]
            lines += table_lines(
                ["target", "brain PSNR", "tumour PSNR", "through-plane", "seeds"], body
            )
            lines += [""]
    return "\n".join(lines)


def write_table(out):
    from dygan_tf.utils.atomic import write_text_atomic

    records = read_records(out)
    if not records:
        raise UserError(f"{out}: no records (<label>_seed<N>/<set>/timing.json) to tabulate")
    table = build_table(records)
    parent = os.path.dirname(os.path.abspath(out))
    write_json_atomic(os.path.join(parent, "table.json"), table)
    write_text_atomic(os.path.join(parent, "table.md"), table_markdown(table))
    print(f"{len(records)} model records; wrote {parent}/table.json, table.md")


def main(argv=None):
    parser = ArgumentParser(prog="research.whole_volume", description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", default=[], help="LABEL=RUN_DIR")
    parser.add_argument("--table", action="store_true", help="tabulate the records under --out")
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
    if args.table:
        return write_table(args.out)
    if not args.model:
        raise UserError("--model: at least one LABEL=RUN_DIR (or --table)")
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
            # The baselines are the same for every model on these cases: scored with the
            # model --baselines names (one that completes every modality), else with each.
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
