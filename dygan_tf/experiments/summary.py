"""The paper-tables results, rewritten from the run records: results.json, results.md
and psnr.png in the records folder.

Every figure comes from RECORDS/runs/<row>/seed<k>/record.json; nothing else is read,
so the summary of a fresh checkout equals the one of the machine that ran them.
"""

import glob
import json
import math
import os

from dygan_tf.experiments import paired, tables
from dygan_tf.experiments.markdown import to_markdown
from dygan_tf.experiments.tables import ABOUT, RECORD, TEST_SETS

RESULTS_JSON, RESULTS_MD, FIGURE = "results.json", "results.md", "psnr.png"
METRICS = ("psnr", "ssim", "psnr_brain")


def load_records(records):
    """{row id: {seed: record}} of every record under `records`/runs."""
    out = {}
    for file in sorted(glob.glob(os.path.join(records, "runs", "*", "seed*", RECORD))):
        with open(file, encoding="utf-8") as f:
            record = json.load(f)
        out.setdefault(record["row"], {})[int(record["seed"])] = record
    return out


def values(runs, test_set, target, metric="psnr"):
    """{seed: value} of one row's runs."""
    out = {}
    for seed, record in runs.items():
        value = record["scores"].get(test_set, {}).get(target, {}).get(metric)
        if value is not None and math.isfinite(value):  # (a NaN score counts as missing)
            out[seed] = value
    return out


def row_summary(records):
    """{row id: {test set: {target: {metric: {"mean", "sd", "n"}}}}} for every row
    (Table 3's λ = 100 row reads Table 2's Ms_DyGAN runs)."""
    out = {}
    for row in tables.ROWS:
        runs = records.get(tables.run_id(row), {})
        if not runs:
            continue
        per = {}
        for test_set in TEST_SETS:
            per[test_set] = {}
            for target in row.targets:
                per[test_set][target] = {}
                for metric in METRICS:
                    mean, sd, n = paired.mean_sd(
                        list(values(runs, test_set, target, metric).values())
                    )
                    per[test_set][target][metric] = {"mean": mean, "sd": sd, "n": n}
        out[row.id] = per
    return out


def claim_summary(records):
    """[{claim, text, pairs: [{better, worse, target, paper_diff, <test set>: paired}]}]."""
    out = []
    for claim in tables.CLAIMS:
        pairs = []
        for better, worse in claim.pairs:
            a, b = tables.ROW_BY_ID[better], tables.ROW_BY_ID[worse]
            for target in a.targets:
                entry = {
                    "better": better,
                    "worse": worse,
                    "target": target,
                    "paper_diff": round(a.paper_psnr[target] - b.paper_psnr[target], 4),
                }
                for test_set in TEST_SETS:
                    entry[test_set] = paired.paired_difference(
                        values(records.get(tables.run_id(a), {}), test_set, target),
                        values(records.get(tables.run_id(b), {}), test_set, target),
                    )
                pairs.append(entry)
        out.append({"claim": claim.number, "text": claim.text, "pairs": pairs})
    return out


def backend_summary(records):
    """[{backend row, target, <test set>: Welch difference to TensorFlow}] for the demo
    trained on JAX and PyTorch (the same seed is not the same initial weights there)."""
    reference = records.get(tables.run_id(tables.ROW_BY_ID["b_tensorflow"]), {})
    out = []
    for row_id in ("b_jax", "b_torch"):
        runs = records.get(row_id, {})
        for target in tables.TARGETS:
            entry = {"row": row_id, "target": target}
            for test_set in TEST_SETS:
                entry[test_set] = paired.independent_difference(
                    values(runs, test_set, target).values(),
                    values(reference, test_set, target).values(),
                )
            out.append(entry)
    return out


def seed_spread(rows):
    """{test set: {target: mean over the paper's rows of the per-row seed SD of PSNR}}
    (each run counted once: rows that reuse another row's runs are left out)."""
    own = {r.id for r in tables.ROWS if r.table in tables.TABLES and not r.same_as}
    out = {}
    for test_set in TEST_SETS:
        out[test_set] = {}
        for target in tables.TARGETS:
            sds = [
                per[test_set][target]["psnr"]["sd"]
                for row_id, per in rows.items()
                if row_id in own
                if target in per[test_set] and per[test_set][target]["psnr"]["sd"] is not None
            ]
            out[test_set][target] = sum(sds) / len(sds) if sds else None
    return out


def _mean(items):
    items = list(items)
    return sum(items) / len(items)


def motivation(records):
    """One DyGAN against three pix2pix models, from Table 2's records (means over seeds)."""
    out = {}
    for row_id in ("t2_pix2pix3", "t2_dygan", "t2_ms_dygan"):
        runs = list(records.get(row_id, {}).values())
        if not runs:
            continue
        out[row_id] = {
            "generator_parameters": runs[0]["parameters"]["generator"],
            "discriminator_parameters": runs[0]["parameters"]["discriminator"],
            "train_wall_s_mean": round(_mean(r["train_wall_s"] for r in runs), 1),
            "inference_s_per_case_mean": round(_mean(r["inference_s_per_case"] for r in runs), 4),
            "runs": len(runs),
        }
    return out


def figure(results, path):
    """Per-row PSNR on the held-out set, mean ± SD over seeds, one panel per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["rows"]
    present = [t for t in tables.TABLES if any(r.id in rows for r in tables.rows_of((t,)))]
    if not present:
        return
    fig, axes = plt.subplots(1, len(present), figsize=(5 * len(present), 4), squeeze=False)
    for ax, table in zip(axes[0], present):
        table_rows = [r for r in tables.rows_of((table,)) if r.id in rows]
        targets = [t for t in tables.TARGETS if any(t in r.targets for r in table_rows)]
        width = 0.8 / len(targets)
        for k, target in enumerate(targets):
            xs, means, sds = [], [], []
            for i, r in enumerate(table_rows):
                stat = rows[r.id]["heldout"].get(target, {}).get("psnr")
                if stat and stat["mean"] is not None:
                    xs.append(i + k * width)
                    means.append(stat["mean"])
                    sds.append(stat["sd"] or 0.0)
            ax.bar(xs, means, width, yerr=sds, capsize=3, label=target.upper())
        ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(table_rows))])
        ax.set_xticklabels([r.label for r in table_rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"Table {table}, 40 held-out phantom cases")
        ax.set_ylabel("PSNR (dB), mean ± SD over seeds")
        low = min((b.get_height() for b in ax.patches), default=0)
        ax.set_ylim(max(0, low - 3), None)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build(records):
    """The results dict from the records."""
    found = load_records(records)
    all_records = [r for runs in found.values() for r in runs.values()]
    rows = row_summary(found)
    return {
        "about": ABOUT,
        "runs": len(all_records),
        "commits": sorted({r["commit"] or "unknown" for r in all_records}),
        "machines": sorted(
            {
                f"{r['machine']['cpu']} ({r['machine']['cpu_kind']}; "
                f"{' '.join(r['machine']['cpu_flags'])})"
                for r in all_records
            }
        ),
        "rows": rows,
        "claims": claim_summary(found),
        "backends": backend_summary(found),
        "seed_sd": seed_spread(rows),
        "motivation": motivation(found),
        "records": {
            row: {str(seed): rec for seed, rec in sorted(runs.items())}
            for row, runs in sorted(found.items())
        },
    }


def write(records):
    """Rewrites results.json, results.md and psnr.png in `records`; returns the dict."""
    from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic

    os.makedirs(records, exist_ok=True)
    results = build(records)
    write_json_atomic(os.path.join(records, RESULTS_JSON), results)
    write_text_atomic(os.path.join(records, RESULTS_MD), to_markdown(results))
    if results["rows"]:
        with atomic_path(os.path.join(records, FIGURE)) as tmp:
            figure(results, tmp)
    return results
