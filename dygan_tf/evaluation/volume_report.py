"""The whole-volume evaluation's report: per-target statistics, summary.md, the CSV rows
and JSON-safe values (`dygan_tf.evaluation.volumes` computes the rows)."""

import csv
import io
import math

import numpy as np

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.utils import markdown

REGIONS = ("brain", "tumour", "outside")
BRASYN_COLUMNS = ("brasyn_ssim_tumour", "brasyn_ssim_non_tumour")
# Through-plane consistency: the prediction's mean |difference between consecutive axial
# slices| inside the brain minus the truth's (both in the scorer's [0, 1] scaling).
THROUGH_PLANE = "through_plane_excess"
COLUMNS = (
    ("case_id", "target", "prediction", "brain_voxels", "tumour_voxels")
    + tuple(f"{metric}_{region}" for metric in ("psnr", "ssim") for region in REGIONS)
    + BRASYN_COLUMNS
    + (THROUGH_PLANE,)
)


def summarize(rows):
    """{target: {"volumes": n, "<metric>_<region>": {"mean", "std", "n"}}} over rows."""
    summary = {}
    for target in MODALITIES:
        chosen = [r for r in rows if r["target"] == target]
        if not chosen:
            continue
        entry = {"volumes": len(chosen)}
        for key in COLUMNS[5:]:
            values = np.array([r[key] for r in chosen], np.float64)
            values = values[np.isfinite(values)]
            entry[key] = {
                "mean": float(values.mean()) if values.size else None,
                "std": float(values.std()) if values.size else None,
                "n": int(values.size),
            }
        summary[target] = entry
    return summary


def _cell(stat, digits):
    if stat["mean"] is None:
        return "n/a"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


BASELINE_LABELS = {"copy_source": "copy {source}", "intensity_lut": "intensity LUT {source}"}
SSIM_VARIANTS = {
    "full": "full (torchmetrics >= 1.4.2: the whole SSIM map averaged)",
    "crop": "crop (torchmetrics <= 1.4.1: 5 voxels cropped off every side first)",
}


def _rows(summary, columns, digits):
    """Table rows: per target the model's row, then each baseline's."""
    rows = []
    for target, entry in summary["targets"].items():
        cells = [_cell(entry[c], d) for c, d in zip(columns, digits)]
        rows.append([target, entry["volumes"], *cells])
        source = summary["baseline_sources"].get(target)
        for method, baseline in summary["baselines"].items():
            if target not in baseline["targets"]:
                continue
            other = baseline["targets"][target]
            label = BASELINE_LABELS[method].format(source=source) + " (baseline)"
            cells = [_cell(other[c], d) for c, d in zip(columns, digits)]
            rows.append([f"{target}: {label}", other["volumes"], *cells])
    return rows


def _lut_line(record):
    if not record["fitted"]:
        return f"The intensity LUT baseline is not scored: {record['why']}."
    left = [
        f"{record[k]} {what}"
        for k, what in (
            ("scored_so_left_out", "scored here, so left out"),
            ("not_in_truth", "not in the truth root"),
            ("not_read", "not read (at most 50, evenly spread)"),
        )
        if record.get(k)
    ]
    return (
        f"The intensity LUT (source intensity -> mean target intensity over the brain, "
        f"256 bins, both in the scorer's percentile scaling) was fitted on "
        f"{record['cases']} of the split's {record['training_cases']} training cases"
        + (f" ({'; '.join(left)})" if left else "")
        + ", never on a scored case."
    )


def not_scored_lines(rows):
    """What n/a means here: per target and reason, the columns, cases and methods
    (the model, a baseline) concerned."""
    grouped = {}
    for row in rows:
        method = row.get("method", "model")
        for column, why in row.get("why_na", {}).items():
            columns, cases, methods = grouped.setdefault((row["target"], why), ({}, set(), {}))
            columns[column] = methods[method] = None
            cases.add(row["case_id"])
    lines = []
    for (target, why), (columns, cases, methods) in grouped.items():
        shown = ", ".join(sorted(cases)[:5]) + (" ..." if len(cases) > 5 else "")
        count = f"{len(cases)} case{'' if len(cases) == 1 else 's'}"
        lines.append(
            f"- {target} {', '.join(columns)} ({', '.join(methods)}): {why} ({count}: {shown})"
        )
    return lines


def format_markdown(summary, rows=()):
    """summary.md: the model's scores beside the baselines', what n/a means, the cases
    left without a prediction, and which BraSyn SSIM variant was computed."""
    ours = [f"{m}_{r}" for m in ("psnr", "ssim") for r in REGIONS]
    header = ["target", "volumes"] + [
        f"{metric} {region}" for metric in ("PSNR (dB)", "SSIM") for region in REGIONS
    ]
    variant = summary["method"]["brasyn_ssim"]
    lines = [
        f"Whole-volume evaluation, {summary['cases']} cases (mean ± std over volumes); "
        "each target's baselines below it, from the source named (the one whose training "
        "LUT fits best; without a LUT the first present of t2, t1, flair, t1ce)",
        "",
        *markdown.table_lines(header, _rows(summary, ours, [2] * 3 + [4] * 3)),
        "",
        "Ours: each volume scaled by its own brain percentiles; regions inside the brain. "
        + _lut_line(summary["lut"]),
        "",
        "BraSyn's own SSIM (its ssim.py: whole-array percentiles, tumour = seg > 0 and "
        "non-tumour = the rest, background included, torchmetrics' 3-D SSIM averaged over "
        f"the whole array); variant {SSIM_VARIANTS[variant]}; BraSyn's segmentation-based "
        "score is not computed:",
        "",
        *markdown.table_lines(
            ("target", "volumes", "BraSyn SSIM tumour", "BraSyn SSIM non-tumour"),
            _rows(summary, BRASYN_COLUMNS, [4, 4]),
        ),
    ]
    lines += [
        "",
        "Through-plane consistency (mean |difference between consecutive axial slices| "
        "inside the brain, prediction minus truth, on the [0, 1] scale of ours; 0: as "
        "smooth from slice to slice as the truth, above 0: jumpier, below 0: smoother):",
        "",
        *markdown.table_lines(
            ("target", "volumes", "through-plane excess"),
            _rows(summary, (THROUGH_PLANE,), [4]),
        ),
    ]
    not_scored = not_scored_lines(rows)
    if not_scored:
        lines += ["", "n/a (no score) and fewer values than volumes, why:", "", *not_scored]
    missing = summary["missing"]
    for key, what in (
        ("cases_without_prediction", "cases of the truth root asked for with no prediction "
         "(not scored)"),
        ("split_cases_not_in_truth", "cases of the split not in the truth root"),
    ):  # fmt: skip
        ids = missing[key]
        if ids:
            shown = ", ".join(ids[:20]) + (f" and {len(ids) - 20} more" if len(ids) > 20 else "")
            lines += ["", f"{len(ids)} {what}: {shown}"]
    return "\n".join(lines) + "\n"


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"  # empty: the region is empty
    return value


def _format_csv(rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS + ("why_na",))
    for row in rows:
        why = "; ".join(f"{c}: {w}" for c, w in row.get("why_na", {}).items())
        writer.writerow([*(_csv_value(row[k]) for k in COLUMNS), why])
    return text.getvalue()


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
