"""The whole-volume evaluation's report: per-target statistics, summary.md, the CSV rows
and JSON-safe values (`dygan_tf.evaluation.volumes` computes the rows)."""

import csv
import io
import math

import numpy as np

from dygan_tf.config.tasks import MODALITIES

REGIONS = ("brain", "tumour", "outside")
BRASYN_COLUMNS = ("brasyn_ssim_tumour", "brasyn_ssim_non_tumour")
COLUMNS = (
    ("case_id", "target", "prediction", "brain_voxels", "tumour_voxels")
    + tuple(f"{metric}_{region}" for metric in ("psnr", "ssim") for region in REGIONS)
    + BRASYN_COLUMNS
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


def format_markdown(summary, cases):
    header = "| target | volumes | " + " | ".join(
        f"{metric} {region}" for metric in ("PSNR (dB)", "SSIM") for region in REGIONS
    )
    lines = [
        f"Whole-volume evaluation, {cases} cases (mean ± std over volumes)",
        "",
        header + " |",
        "|---" * (2 + 2 * len(REGIONS)) + "|",
    ]
    for target, entry in summary.items():
        cells = [_cell(entry[f"psnr_{r}"], 2) for r in REGIONS]
        cells += [_cell(entry[f"ssim_{r}"], 4) for r in REGIONS]
        lines.append(f"| {target} | {entry['volumes']} | " + " | ".join(cells) + " |")
    lines += [
        "",
        "Ours: each volume scaled by its own brain percentiles; regions inside the brain.",
        "",
        "BraSyn's own SSIM (its ssim.py: whole-array percentiles, tumour = seg > 0 and "
        "non-tumour = the rest, background included, torchmetrics' 3-D SSIM averaged over "
        "the whole array); BraSyn's segmentation-based score is not computed:",
        "",
        "| target | volumes | BraSyn SSIM tumour | BraSyn SSIM non-tumour |",
        "|---|---|---|---|",
    ]
    for target, entry in summary.items():
        cells = [_cell(entry[c], 4) for c in BRASYN_COLUMNS]
        lines.append(f"| {target} | {entry['volumes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _csv_value(value):
    if isinstance(value, float):
        return "" if math.isnan(value) else f"{value:.6f}"  # empty: the region is empty
    return value


def _format_csv(rows):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(_csv_value(row[k]) for k in COLUMNS)
    return text.getvalue()


def _json_safe(value):
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value
