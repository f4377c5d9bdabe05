"""The paper-tables results, rewritten from the run records: results.json, results.md
and psnr.png in the records folder.

Every figure comes from RECORDS/runs/<row>/seed<k>/record.json; nothing else is read,
so the summary of a fresh checkout equals the one of the machine that ran them.
"""

import glob
import json
import math
import os

from dygan_tf.utils.errors import UserError
from research import paired, tables
from research.markdown import to_markdown
from research.tables import BENCHMARKS, RECORD

RESULTS_JSON, RESULTS_MD, FIGURE = "results.json", "results.md", "psnr.png"
METRICS = ("psnr", "ssim", "psnr_brain")
# Where the claims' primary comparisons also get an interval resampling test cases.
PRIMARY_CLAIM = "1"


def benchmark_of(record):
    """A record's benchmark name (records written before benchmarks had names: v1)."""
    return record.get("benchmark", "v1")


def load_records(records):
    """{row id: {seed: record}} of every record under `records`/runs. Refuses, in one
    line, records of two benchmarks, or of one benchmark whose manifests differ (the
    same test set or training data built twice, differently): they cannot share a
    table."""
    out, seen = {}, {}
    for file in sorted(glob.glob(os.path.join(records, "runs", "*", "seed*", RECORD))):
        with open(file, encoding="utf-8") as f:
            record = json.load(f)
        _check_same_benchmark(seen, record, file)
        out.setdefault(record["row"], {})[int(record["seed"])] = record
    return out


def _check_same_benchmark(seen, record, file):
    """`seen` holds the first record's benchmark and every manifest hash met so far."""
    name = benchmark_of(record)
    if "benchmark" not in seen:
        seen["benchmark"], seen["from"] = name, file
    elif name != seen["benchmark"]:
        raise UserError(
            f"{file}: a record of benchmark {name}, beside records of benchmark "
            f"{seen['benchmark']} ({seen['from']}); one table holds one benchmark's records: "
            "give each its own --records folder"
        )
    for data, sha in record.get("manifests", {}).items():
        first = seen.setdefault(("manifest", data), (sha, file))
        if first[0] != sha:
            raise UserError(
                f"{file}: its {data} data's manifest (sha256 {sha[:12]}…) differs from the "
                f"one of {first[1]} ({first[0][:12]}…): the data were rebuilt between runs; "
                "records of different data cannot share a table"
            )


def check_same_data(record, data, records):
    """Refuses, in one line, a run of `data` (paper_tables.default_data) beside a
    record of another benchmark or of other manifests."""
    if benchmark_of(record) != data["benchmark"]:
        raise UserError(
            f"{records}: holds records of benchmark {benchmark_of(record)}; this run is "
            f"benchmark {data['benchmark']}: give it its own --records folder"
        )
    for name, sha in record.get("manifests", {}).items():
        if name in data["manifests"] and data["manifests"][name] != sha:
            raise UserError(
                f"{records}: its records' {name} data (manifest sha256 {sha[:12]}…) differ "
                f"from this run's ({data['manifests'][name][:12]}…): rebuilt data cannot "
                "share a table with them; give this run its own --records folder"
            )


def values(records, row, test_set, target, metric="psnr"):
    """{seed: value} of one row's runs for `target` (a row made of members reads its
    member for that target)."""
    out = {}
    for seed, record in records.get(tables.run_id(row, target), {}).items():
        value = record["scores"].get(test_set, {}).get(target, {}).get(metric)
        if value is not None and math.isfinite(value):  # (a NaN score counts as missing)
            out[seed] = value
    return out


def case_values(records, row, test_set, target):
    """{seed: {case: PSNR}} of one row's runs, from records that keep per-case scores."""
    out = {}
    for seed, record in records.get(tables.run_id(row, target), {}).items():
        cases = record.get("per_case_psnr", {}).get(test_set, {}).get(target)
        if cases:
            out[seed] = cases
    return out


def has_runs(records, row):
    return any(records.get(r.id) for r in tables.run_rows(row))


def row_summary(records, test_sets):
    """{row id: {test set: {target: {metric: {"mean", "sd", "n"}}}}} for every row
    (Table 3's λ = 100 row reads Table 2's Ms_DyGAN runs; the paper's 3×pix2pix its
    members' runs)."""
    out = {}
    for row in tables.ROWS:
        if not has_runs(records, row):
            continue
        per = {}
        for test_set in test_sets:
            per[test_set] = {}
            for target in row.targets:
                per[test_set][target] = {}
                for metric in METRICS:
                    found = values(records, row, test_set, target, metric)
                    mean, sd, n = paired.mean_sd(list(found.values()))
                    per[test_set][target][metric] = {"mean": mean, "sd": sd, "n": n}
        out[row.id] = per
    return out


def claim_summary(records, test_sets):
    """[{claim, text, primary, pairs: [{better, worse, target, paper_diff, <test set>:
    compared}]}]: each claim on each test set is one family (Holm within it)."""
    out = []
    for claim in tables.CLAIMS:
        pairs = []
        for better, worse in claim.pairs:
            a, b = tables.ROW_BY_ID[better], tables.ROW_BY_ID[worse]
            for target in a.targets:
                gap = round(a.paper_psnr[target] - b.paper_psnr[target], 4)
                entry = {"better": better, "worse": worse, "target": target, "paper_diff": gap}
                for test_set in test_sets:
                    entry[test_set] = paired.compare(
                        values(records, a, test_set, target),
                        values(records, b, test_set, target),
                        gap,
                    )
                    if claim.name == PRIMARY_CLAIM:
                        entry[test_set]["case_bootstrap_ci"] = paired.case_bootstrap(
                            case_values(records, a, test_set, target),
                            case_values(records, b, test_set, target),
                        )
                pairs.append(entry)
        for test_set in test_sets:
            paired.judge_family([e[test_set] for e in pairs])
        out.append(
            {
                "claim": claim.number,
                "variant": claim.variant,
                "name": claim.name,
                "text": claim.text,
                "primary": not claim.variant,
                "pairs": pairs,
            }
        )
    return out


def backend_summary(records, test_sets):
    """[{backend row, target, <test set>: Welch difference to TensorFlow}] for the demo
    trained on JAX and PyTorch (the same seed is not the same initial weights there)."""
    reference = tables.ROW_BY_ID["b_tensorflow"]
    out = []
    for row_id in ("b_jax", "b_torch"):
        row = tables.ROW_BY_ID[row_id]
        for target in tables.TARGETS:
            entry = {"row": row_id, "target": target}
            for test_set in test_sets:
                entry[test_set] = paired.independent_difference(
                    values(records, row, test_set, target).values(),
                    values(records, reference, test_set, target).values(),
                )
            out.append(entry)
    return out


def seed_spread(rows, test_sets):
    """{test set: {target: mean over the paper's rows of the per-row seed SD of PSNR}}
    (each run counted once: rows that reuse another row's runs are left out)."""
    own = {r.id for r in tables.ROWS if r.table in tables.TABLES and not r.same_as}
    own -= {r.id for r in tables.ROWS if r.members}
    out = {}
    for test_set in test_sets:
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


def anatomy_gap(records, bench):
    """[{row, target, n, mean, sd, ci, ...}]: each row's PSNR on the new anatomy minus on
    the trained one (`bench.anatomy_shift`), paired by seed; [] for a benchmark whose
    test sets share one anatomy."""
    if bench.anatomy_shift is None:
        return []
    same, new = bench.anatomy_shift
    out = []
    for row in tables.ROWS:
        if row.table not in tables.TABLES or row.same_as or not has_runs(records, row):
            continue
        for target in row.targets:
            gap = paired.paired_difference(
                values(records, row, new, target), values(records, row, same, target)
            )
            out.append({"row": row.id, "target": target, **gap})
    return out


def _mean(items):
    items = list(items)
    return sum(items) / len(items)


def motivation(records):
    """One DyGAN against three pix2pix models, from Table 2's records (means over seeds;
    the paper's 3×pix2pix sums its members: parameters, training and inference time)."""
    out = {}
    for row_id in ("t2_pix2pix3_paper", "t2_pix2pix3", "t2_dygan", "t2_ms_dygan"):
        row = tables.ROW_BY_ID[row_id]
        parts = [list(records.get(r.id, {}).values()) for r in tables.run_rows(row)]
        if not all(parts):
            continue

        def total(read, parts=parts):
            return sum(_mean(read(r) for r in runs) for runs in parts)

        out[row_id] = {
            "generator_parameters": sum(runs[0]["parameters"]["generator"] for runs in parts),
            "discriminator_parameters": sum(
                runs[0]["parameters"]["discriminator"] for runs in parts
            ),
            "train_wall_s_mean": round(total(lambda r: r["train_wall_s"]), 1),
            "inference_s_per_case_mean": round(total(lambda r: r["inference_s_per_case"]), 4),
            "runs": min(len(runs) for runs in parts),
        }
    return out


def figure(results, path):
    """Per-row PSNR on the benchmark's primary test set, mean ± SD over seeds, one panel
    per table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows, bench = results["rows"], BENCHMARKS[results["benchmark"]]
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
                stat = rows[r.id][bench.primary_test_set].get(target, {}).get("psnr")
                if stat and stat["mean"] is not None:
                    xs.append(i + k * width)
                    means.append(stat["mean"])
                    sds.append(stat["sd"] or 0.0)
            ax.bar(xs, means, width, yerr=sds, capsize=3, label=target.upper())
        ax.set_xticks([i + width * (len(targets) - 1) / 2 for i in range(len(table_rows))])
        ax.set_xticklabels([r.label for r in table_rows], rotation=30, ha="right", fontsize=8)
        ax.set_title(f"Table {table}, {bench.name}: {bench.primary_test_set}", fontsize=9)
        ax.set_ylabel("PSNR (dB), mean ± SD over seeds")
        low = min((b.get_height() for b in ax.patches), default=0)
        ax.set_ylim(max(0, low - 3), None)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def build(records, benchmark="v1"):
    """The results dict from the records (of `benchmark`, where there are none yet)."""
    found = load_records(records)
    all_records = [r for runs in found.values() for r in runs.values()]
    if all_records:
        benchmark = benchmark_of(all_records[0])
    bench = BENCHMARKS[benchmark]
    test_sets = bench.test_sets
    rows = row_summary(found, test_sets)
    return {
        "benchmark": bench.name,
        "test_sets": list(test_sets),
        "primary_test_set": bench.primary_test_set,
        "about": bench.about,
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
        "claims": claim_summary(found, test_sets),
        "backends": backend_summary(found, test_sets),
        "seed_sd": seed_spread(rows, test_sets),
        "anatomy_shift": list(bench.anatomy_shift or ()),
        "anatomy_gap": anatomy_gap(found, bench),
        "motivation": motivation(found),
        "records": {
            row: {str(seed): rec for seed, rec in sorted(runs.items())}
            for row, runs in sorted(found.items())
        },
    }


def write(records, benchmark="v1"):
    """Rewrites results.json, results.md and psnr.png in `records`; returns the dict."""
    from dygan_tf.utils.atomic import atomic_path, write_json_atomic, write_text_atomic

    os.makedirs(records, exist_ok=True)
    results = build(records, benchmark)
    write_json_atomic(os.path.join(records, RESULTS_JSON), results)
    write_text_atomic(os.path.join(records, RESULTS_MD), to_markdown(results))
    if results["rows"]:
        with atomic_path(os.path.join(records, FIGURE)) as tmp:
            figure(results, tmp)
    return results
