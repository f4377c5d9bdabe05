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
from dygan_tf.experiments.tables import RECORD, TEST_SETS

RESULTS_JSON, RESULTS_MD, FIGURE = "results.json", "results.md", "psnr.png"
METRICS = ("psnr", "ssim", "psnr_brain")
TEST_SET_NAMES = {
    "demo": "the demo's 7 test cases",
    "heldout": "40 held-out cases of a seed-1 phantom",
}
ABOUT = (
    "These verdicts are about a 64 px phantom built from one template brain (nilearn's "
    "MNI152), at the demo preset, on a CPU — not about BraTS."
)


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


def _md_value(stat, digits=2):
    if stat["mean"] is None:
        return "—"
    if stat["sd"] is None:
        return f"{stat['mean']:.{digits}f} (n = 1)"
    return f"{stat['mean']:.{digits}f} ± {stat['sd']:.{digits}f}"


def _md_diff(d):
    if d["n"] == 0:
        return "—"
    if d["ci"] is None:
        return f"{d['mean']:+.2f} (n = 1)"
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _md_welch(d):
    if d["mean"] is None:
        return "—"
    if d["ci"] is None:
        return f"{d['mean']:+.2f} (n = {d['n_a']} vs {d['n_b']})"
    return f"{d['mean']:+.2f} [{d['ci'][0]:+.2f}, {d['ci'][1]:+.2f}]"


def _claim_verdict(entries, test_set):
    verdicts = [e[test_set]["verdict"] for e in entries]
    if all(v == paired.HOLDS for v in verdicts):
        return paired.HOLDS
    if all(v == paired.REVERSED for v in verdicts):
        return paired.REVERSED
    held = sum(v == paired.HOLDS for v in verdicts)
    reversed_ = sum(v == paired.REVERSED for v in verdicts)
    unresolved = len(verdicts) - held - reversed_
    if held == reversed_ == 0:
        return paired.NO_RUNS if all(v == paired.NO_RUNS for v in verdicts) else paired.NOT_RESOLVED
    parts = [f"{held} holds", f"{reversed_} reversed", f"{unresolved} not resolved"]
    return "mixed: " + ", ".join(p for p in parts if not p.startswith("0 "))


def to_markdown(results):
    lines = [
        f"**{ABOUT}**",
        "",
        "Written by `python -m dygan_tf.experiments.paper_tables` from the records in "
        "`runs/` beside this file; see [../paper-tables.md](../paper-tables.md) for the "
        "reading of each row.",
        "",
        f"- commits of the runs: {', '.join(results['commits']) or '—'}",
        f"- machines: {'; '.join(results['machines']) or '—'}",
        f"- runs recorded: {results['runs']}",
        "",
    ]
    rows = results["rows"]
    for table in tables.TABLES:
        table_rows = [r for r in tables.rows_of((table,)) if r.id in rows]
        if not table_rows:
            continue
        targets = [t for t in tables.TARGETS if any(t in r.targets for r in table_rows)]
        lines += [f"## Table {table}: PSNR (dB), mean ± SD over seeds; the paper's in brackets", ""]
        for test_set in TEST_SETS:
            lines += [f"On {TEST_SET_NAMES[test_set]}:", ""]
            lines.append("| row | seeds | " + " | ".join(t.upper() for t in targets) + " |")
            lines.append("|---|---|" + "---|" * len(targets))
            for r in table_rows:
                per = rows[r.id][test_set]
                n = max((per[t]["psnr"]["n"] for t in r.targets), default=0)
                cells = [
                    f"{_md_value(per[t]['psnr'])} [{r.paper_psnr[t]:.2f}]" if t in per else ""
                    for t in targets
                ]
                lines.append(f"| {r.label} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
    lines += [
        "## Claims: paired differences (same seed), PSNR dB, with 95 % t intervals",
        "",
        "A claim holds where the interval is above 0, is reversed where it is below 0 and "
        "is not resolved where it contains 0; ± is the interval's half-width, the smallest "
        "mean difference these seeds could resolve.",
        "",
        "| claim | pair | target | paper Δ | Δ, 7 demo cases | verdict "
        "| Δ, 40 held-out cases | verdict | resolvable (held-out) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for claim in results["claims"]:
        for e in claim["pairs"]:
            pair = f"{tables.ROW_BY_ID[e['better']].label} − {tables.ROW_BY_ID[e['worse']].label}"
            half = e["heldout"]["half_width"]
            lines.append(
                f"| {claim['claim']} | {pair} | {e['target'].upper()} | {e['paper_diff']:+.2f} | "
                f"{_md_diff(e['demo'])} | {e['demo']['verdict']} | {_md_diff(e['heldout'])} | "
                f"{e['heldout']['verdict']} | {'—' if half is None else f'± {half:.2f}'} |"
            )
    lines += [
        "",
        "| claim | verdict (7 demo cases) | verdict (40 held-out cases) |",
        "|---|---|---|",
    ]
    for claim in results["claims"]:
        lines.append(
            f"| {claim['claim']}. {claim['text']} | {_claim_verdict(claim['pairs'], 'demo')} | "
            f"{_claim_verdict(claim['pairs'], 'heldout')} |"
        )
    spread = results["seed_sd"]
    lines += [
        "",
        "Seed SD of PSNR (dB), the mean over rows of each row's SD: "
        + "; ".join(
            f"{TEST_SET_NAMES[s]}: "
            + ", ".join(f"{t.upper()} {v:.2f}" for t, v in spread[s].items() if v is not None)
            for s in TEST_SETS
        ),
        "",
    ]
    backend_rows = [r for r in tables.rows_of((tables.BACKENDS,)) if r.id in rows]
    if len(backend_rows) > 1:
        lines += [
            "## The demo on each Keras backend (Ms_DyGAN; not the paper's)",
            "",
            "PSNR (dB), mean ± SD over seeds. The same `--seed` draws other initial weights "
            "on each backend, so JAX and PyTorch are compared with TensorFlow as independent "
            "samples: the difference of means with Welch's 95 % interval.",
            "",
        ]
        for test_set in TEST_SETS:
            lines += [f"On {TEST_SET_NAMES[test_set]}:", ""]
            lines.append("| backend | seeds | FLAIR | T1 | T1CE |")
            lines.append("|---|---|---|---|---|")
            for r in backend_rows:
                per = rows[r.id][test_set]
                n = max(per[t]["psnr"]["n"] for t in r.targets)
                cells = [_md_value(per[t]["psnr"]) for t in tables.TARGETS]
                lines.append(f"| {r.label} | {n} | " + " | ".join(cells) + " |")
            lines.append("")
        lines += [
            "| backend − TensorFlow | target | Δ, 7 demo cases | verdict | Δ, 40 held-out "
            "cases | verdict |",
            "|---|---|---|---|---|---|",
        ]
        for e in results["backends"]:
            lines.append(
                f"| {tables.ROW_BY_ID[e['row']].label} | {e['target'].upper()} | "
                f"{_md_welch(e['demo'])} | {e['demo']['verdict']} | "
                f"{_md_welch(e['heldout'])} | {e['heldout']['verdict']} |"
            )
        lines.append("")
    if results["motivation"]:
        lines += [
            "## One DyGAN against three pix2pix models (Table 2's runs, means over seeds)",
            "",
            "| model | G parameters | D parameters | training wall time (s) "
            "| inference per case (s) |",
            "|---|---|---|---|---|",
        ]
        for row_id, m in results["motivation"].items():
            lines.append(
                f"| {tables.ROW_BY_ID[row_id].label} | {m['generator_parameters']:,} | "
                f"{m['discriminator_parameters']:,} | {m['train_wall_s_mean']:.0f} | "
                f"{m['inference_s_per_case_mean']:.3f} |"
            )
        lines.append("")
    return "\n".join(lines)


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
