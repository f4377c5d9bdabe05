"""Whole-volume evaluation of synthesised MR sequences against the real ones: our scores
per region (brain, tumour, outside) and BraSyn's own SSIM scores (its ssim.py).

The library behind `python -m dygan_tf.evaluate_volumes` (its usage and flags are in that
command's module and in docs/reference/cli.md).
"""

import math
import os
import re
import sys
import time

import numpy as np

from dygan_tf.config.tasks import BRATS2023_NAMES, MODALITIES
from dygan_tf.data import nifti, preprocessing
from dygan_tf.evaluation import volume_baselines
from dygan_tf.evaluation.volume_metrics import (
    BRASYN_PAD,
    axial_axis,
    brasyn_ssim,
    region_scores,
    scale_to_unit,
    through_plane_step,
)
from dygan_tf.evaluation.volume_report import (  # noqa: F401 (REGIONS, COLUMNS: this module's API)
    BRASYN_COLUMNS,
    COLUMNS,
    REGIONS,
    THROUGH_PLANE,
    _format_csv,
    _json_safe,
    format_markdown,
    summarize,
)
from dygan_tf.utils.atomic import write_json_atomic, write_text_atomic
from dygan_tf.utils.errors import UserError
from dygan_tf.utils.progress import Progress

BRASYN_SSIM = ("full", "crop")  # torchmetrics >= 1.4.2 / <= 1.4.1 (--brasyn-ssim)
CSV_NAME, MARKDOWN_NAME, JSON_NAME = "per_case.csv", "summary.md", "summary.json"
# Name tokens that mean a modality: ours, and the BraTS 2023 / BraSyn spellings.
MODALITY_TOKENS = {m: m for m in MODALITIES} | {v: k for k, v in BRATS2023_NAMES.items()}
METHOD = {
    "brain": "union of the non-zero voxels of the case's four real sequences",
    "tumour": "seg > 0 within the brain (empty when the case has no seg file)",
    "outside": "brain minus tumour",
    "normalisation": "each volume (prediction and truth apart) clipped to its own 0.5 and "
    "99.5 percentiles over the brain and scaled to [0, 1]",
    "psnr": "10 log10(1 / MSE) over the region's voxels, capped at 100 dB",
    "ssim": "3-D SSIM (Gaussian window 11, sigma 1.5, k1 0.01, k2 0.03, mirrored edges) of "
    "both volumes set to 0 outside the region, averaged over the region's voxels",
    "through_plane_excess": "mean |difference between consecutive axial slices| of the "
    "prediction minus that of the truth, both scaled as ours, over the voxel pairs of "
    "consecutive slices both inside the brain (0: as smooth across slices as the truth)",
    "std": "population standard deviation (ddof 0) over volumes",
    "brasyn": "BraSyn's own scores (hongweilibran/BraSyn ssim.py, 2024-07-03), not ours: "
    "each volume clipped to its 0.5/99.5 percentiles over the whole array (the lower "
    "bound raised to 0 if negative) and scaled to [0, 1]; tumour = seg > 0, non-tumour = "
    "everything else including background; both volumes multiplied by the integer mask; "
    "torchmetrics' default 3-D SSIM (Gaussian 11, sigma 1.5, reflected edges, data range "
    "from the volumes) averaged over the whole array. Empty without a seg file. BraSyn's "
    "segmentation-based score (Dice of a segmenter on the completed case) and PSNR are "
    "not part of this",
}


def match_prediction(name, case_ids):
    """`(case_id, modality)` a prediction's file name stands for, or None.

    The case id is the longest of `case_ids` found in the name with no letter or digit
    right before or after it (so `X_1` does not match `X_10_flair`). The rest of the
    name is split at every character that is not a letter or digit; exactly one piece
    must be a modality token (flair, t1, t1ce, t2, or t2f, t1n, t1c, t2w; any case). Whole pieces
    are compared, so `t1` never matches inside `t1ce`. Raises UserError for a name with
    several modality tokens.
    """
    stem = nifti.nifti_stem(name)
    if stem is None:
        return None
    best = None
    for cid in case_ids:
        start = stem.find(cid)
        while start >= 0:
            end = start + len(cid)
            bounded = (start == 0 or not stem[start - 1].isalnum()) and (
                end == len(stem) or not stem[end].isalnum()
            )
            if bounded and (best is None or len(cid) > best[2] - best[1]):
                best = (cid, start, end)
            start = stem.find(cid, start + 1)
    if best is None:
        return None
    cid, start, end = best
    rest = f"{stem[:start]} {stem[end:]}".lower()
    found = {MODALITY_TOKENS[t] for t in re.split(r"[^a-z0-9]+", rest) if t in MODALITY_TOKENS}
    if len(found) > 1:
        raise UserError(
            f"{name}: names several modalities ({', '.join(sorted(found))}); expected one "
            "modality token per prediction file, e.g. <case>_flair_synth.nii.gz"
        )
    return (cid, found.pop()) if found else None


def find_predictions(pred_dir, case_ids, exclude=()):
    """{(case_id, modality): path} for the NIfTI files under `pred_dir` (searched
    recursively; hidden names skipped), matched by `match_prediction`. Files in
    `exclude` (the real volumes, e.g. when predictions were written into the case
    folders) are left out. Returns `(found, unmatched_count)`."""
    if not os.path.isdir(pred_dir):
        raise UserError(f"{pred_dir}: not a folder; expected the folder of synthesised volumes")
    exclude = {os.path.realpath(p) for p in exclude}
    found, unmatched = {}, 0
    for folder, subfolders, names in os.walk(pred_dir):
        subfolders[:] = sorted(d for d in subfolders if not d.startswith("."))
        for name in sorted(names):
            path = os.path.join(folder, name)
            if name.startswith(".") or nifti.nifti_stem(name) is None:
                continue
            if os.path.realpath(path) in exclude:
                continue
            key = match_prediction(name, case_ids)
            if key is None:
                unmatched += 1
            elif key in found:
                raise UserError(
                    f"{path} and {found[key]} are both predictions of {key[0]} {key[1]}; "
                    "expected one file per case and modality"
                )
            else:
                found[key] = path
    return found, unmatched


def _split_case_ids(split_from, split, missing_ok=False):
    """The case ids of a manifest's split (`missing_ok`: None if it has no such split)."""
    from dygan_tf.data import manifest as manifest_lib  # reads JSON only (no TensorFlow)

    folder = split_from
    if os.path.basename(os.path.normpath(split_from)) == manifest_lib.MANIFEST:
        folder = os.path.dirname(os.path.abspath(split_from))
    if missing_ok and split not in manifest_lib.read_manifest(folder)["splits"]:
        return None
    entries = manifest_lib.split_cases(folder, split)
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("case_id"), str) for e in entries
    ):
        raise UserError(
            f"{manifest_lib.manifest_path(folder)}: split {split!r} has no list of cases "
            "with a case_id each; expected a manifest from dygan-build-tfrecords"
        )
    return {e["case_id"] for e in entries}


def _check_same_grid(pred_path, truth_path):
    from dygan_tf.data.cases import AFFINE_TOLERANCE

    pred_image, pred_shape = nifti.read_header(pred_path)
    truth_image, truth_shape = nifti.read_header(truth_path)
    if pred_shape != truth_shape:
        raise UserError(
            f"{pred_path}: shape {pred_shape} differs from {truth_shape} of {truth_path}; "
            "expected the prediction on the real volume's grid"
        )
    if not np.allclose(pred_image.affine, truth_image.affine, atol=AFFINE_TOLERANCE):
        raise UserError(
            f"{pred_path}: affine {np.round(pred_image.affine, 3).tolist()} differs from "
            f"{np.round(truth_image.affine, 3).tolist()} of {truth_path}; expected the "
            "prediction on the real volume's grid"
        )


def read_scored(path, allow_zero=False):
    """The data of a real or predicted volume. NaN/inf voxels (outside the field of view
    of a resampled volume) are read as 0, with one `note:` line: in a real volume they
    are background, outside the brain; in a prediction they score as 0."""
    volume = nifti.read_volume(path, allow_zero, non_finite="background")
    note = nifti.non_finite_note(volume, path, "read as background (0)")
    if note:
        print(note, file=sys.stderr)
    return volume.data


def evaluate_case(files, predictions, brasyn_crop=False, lut=None, with_baselines=True):
    """Rows (one per target) for one case, and the baselines' rows.

    Args:
        files: {modality or 'seg': path} of the case's real volumes.
        predictions: {target modality: path of the synthesised volume}.
        brasyn_crop: BraSyn's SSIM as torchmetrics <= 1.4.1 computed it (5 voxels
            cropped off every side), not as >= 1.4.2 does.
        lut: a fitted `volume_baselines.VolumeLUT` (None: the LUT baseline is not
            scored).
        with_baselines: False: no baseline is scored (their rows are the same for
            every model scored on these cases).

    Returns:
        (rows, baseline rows): dicts with the keys of `COLUMNS` (metrics as floats, NaN
        if the region is empty or the score undefined, `why_na` saying why), the
        baselines' with `method` ("copy_source", "intensity_lut") and `source`, scored
        exactly as a prediction of the same target.
    """
    real = {m: read_scored(files[m]) for m in MODALITIES}
    brain = preprocessing.brain_mask(real.values())
    tumour, seg = np.zeros_like(brain), None
    if "seg" in files:
        seg = read_scored(files["seg"], allow_zero=True)
        tumour = (seg > 0) & brain
    regions = {"brain": brain, "tumour": tumour, "outside": brain & ~tumour}
    unit = {m: scale_to_unit(v, brain) for m, v in real.items()}
    axis = axial_axis(nifti.read_header(files[MODALITIES[0]])[0].affine)
    case = _CaseVolumes(real, unit, brain, tumour, seg, regions, brasyn_crop, axis)
    rows, baselines = [], []
    for target, path in sorted(predictions.items()):
        rows.append(case.score(target, read_scored(path, allow_zero=True), path))
        if not with_baselines:
            continue
        source = volume_baselines.source_for(target, real, lut)
        made = volume_baselines.baseline_volumes(real, unit, brain, target, source, lut)
        for method, volume in made.items():
            what = f"copy {source}" if method == "copy_source" else f"LUT {source}->{target}"
            row = case.score(target, volume, what)
            baselines.append({**row, "method": method, "source": source})
    return rows, baselines


class _CaseVolumes:
    """One case's real volumes and regions, scoring any volume offered as a target."""

    def __init__(self, real, unit, brain, tumour, seg, regions, crop, axis):
        self.real, self.unit, self.brain, self.tumour = real, unit, brain, tumour
        self.seg, self.regions, self.crop = seg, regions, crop
        self.axis = axis  # the axial axis, for the through-plane consistency
        self.truth_step = {}

    def score(self, target, pred, path):
        row = {
            "target": target,
            "prediction": path,
            "brain_voxels": int(self.brain.sum()),
            "tumour_voxels": int(self.tumour.sum()),
        }
        pred01 = scale_to_unit(pred, self.brain)
        for name, region in self.regions.items():
            row[f"psnr_{name}"], row[f"ssim_{name}"] = region_scores(
                self.unit[target], pred01, region
            )
        scores = (math.nan, math.nan)
        if self.seg is not None:
            scores = brasyn_ssim(self.real[target], pred, self.seg, self.crop)
        row.update(zip(BRASYN_COLUMNS, scores))
        if target not in self.truth_step:
            self.truth_step[target] = through_plane_step(self.unit[target], self.brain, self.axis)
        step = through_plane_step(pred01, self.brain, self.axis)
        row[THROUGH_PLANE] = step - self.truth_step[target]
        row["why_na"] = self._why_na(row, target, pred)
        return row

    def _why_na(self, row, target, pred):
        """{column: why it is NaN} for the row's undefined scores."""
        why = {}
        for column in COLUMNS[5:]:
            if not math.isnan(row[column]):
                continue
            if column == THROUGH_PLANE:
                why[column] = "no two consecutive axial slices hold brain at one voxel"
            elif column.startswith("brasyn") and self.crop and min(pred.shape) <= 2 * BRASYN_PAD:
                why[column] = (
                    f"the volume ({'x'.join(map(str, pred.shape))}) is too small for the crop "
                    f"({BRASYN_PAD} voxels off each side)"
                )
            elif column.startswith("brasyn") and self.seg is None:
                why[column] = "no seg file: BraSyn's SSIM needs the tumour mask"
            elif column.startswith("brasyn") and np.ptp(pred) == 0:
                why[column] = (
                    f"the prediction is {float(np.ravel(pred)[0]):g} everywhere: BraSyn's "
                    "percentile scaling divides by zero"
                )
            elif column.startswith("brasyn") and np.ptp(self.real[target]) == 0:
                why[column] = "the real volume is constant: BraSyn's scaling divides by zero"
            elif column.startswith("brasyn"):
                why[column] = "both masked volumes constant (an empty or whole-array mask)"
            elif column.endswith("_tumour") and self.seg is None:
                why[column] = "no seg file: no tumour region"
            elif column.endswith("_tumour"):
                why[column] = "the seg file marks no tumour inside the brain"
            else:
                why[column] = "the tumour covers the whole brain: no region outside it"
        return why


def evaluate_volumes(
    pred_dir,
    truth_root,
    out_dir,
    split_from=None,
    split="test",
    verbose=True,
    brasyn_ssim_mode="full",
    lut_from=None,
    baselines=True,
):
    """Scores every synthesised volume under `pred_dir` against the real one.

    Every bad input (a missing folder, no prediction found, an unreadable NIfTI file or
    another format, a prediction off its real volume's grid, a bad manifest or split)
    raises a UserError before anything is written. NaN/inf voxels are read as 0 with a
    `note:` line (`read_scored`).

    Args:
        pred_dir: folder searched recursively for predictions (see `match_prediction`).
        truth_root: BraTS root (see `dygan_tf.data.cases.discover_cases`) holding the real
            `<case>/<case>_<modality>.nii[.gz]` and `<case>_seg.nii[.gz]`.
        out_dir: where per_case.csv, summary.md and summary.json are written.
        split_from: shard folder (or its manifest.json) whose split lists the cases
            to keep; None keeps every case.
        split: the split's name in that manifest.
        verbose: progress and the summary table on stdout.
        brasyn_ssim_mode: "full" (torchmetrics >= 1.4.2, the default) or "crop"
            (torchmetrics <= 1.4.1 cropped 5 voxels off every side) for BraSyn's SSIM.
        lut_from: shard folder (or its manifest.json) of the training data: the LUT
            baseline is fitted on its train split's cases, read from the BraTS root its
            manifest names (a test set in its own root, e.g. the benchmark's); None: on
            `split_from`'s train split, read from `truth_root`.
        baselines: False: neither baseline is scored (nor the LUT fitted), e.g. for the
            second of several models scored on the same cases.

    Returns:
        The summary as written to summary.json: the method, the per-target
        statistics under "targets" and one dict per volume under "volumes".

    Example:

    >>> summary = evaluate_volumes("out/synth", "data/brats", "out/eval")
    >>> summary["targets"]["flair"]["psnr_brain"]["mean"]
    24.1
    """
    start = time.perf_counter()
    matched = _matched_predictions(pred_dir, truth_root, split_from, split)
    cases, by_case, found, skipped, truth_cases, wanted = matched
    if verbose:
        print(
            f"evaluating {found} volumes of {len(by_case)} cases ({skipped[0]} other "
            f"NIfTI files, {skipped[1]} predictions outside the split ignored)"
        )
    lut, lut_record = (None, {"fitted": False, "why": "no baselines asked for"})
    if baselines:
        lut, lut_record = _lut_of(truth_cases, truth_root, split_from, lut_from, by_case, verbose)
    rows, baseline_rows = _score_cases(
        cases, by_case, brasyn_ssim_mode == "crop", lut, verbose, baselines
    )
    sources = {r["target"]: r["source"] for r in baseline_rows}
    reference = {
        b: {"targets": summarize(chosen), "volumes": chosen}
        for b in volume_baselines.BASELINES
        if (chosen := [r for r in baseline_rows if r["method"] == b])
    }
    missing = {
        "cases_without_prediction": sorted(set(truth_cases) & wanted - set(by_case)),
        "split_cases_not_in_truth": sorted(wanted - set(truth_cases)),
    }
    summary = {
        "pred": os.path.abspath(pred_dir),
        "truth": os.path.abspath(truth_root),
        "split": None
        if split_from is None
        else {"manifest": os.path.abspath(split_from), "name": split},
        "method": {**METHOD, "brasyn_ssim": brasyn_ssim_mode},
        "cases": len(by_case),
        "targets": summarize(rows),
        "volumes": rows,
        "baselines": reference,
        "baseline_sources": dict(sorted(sources.items())),
        "lut": lut_record,
        "missing": missing,
    }
    markdown = format_markdown(summary, rows + baseline_rows)
    paths = output_paths(out_dir)
    write_text_atomic(paths[0], _format_csv(rows))
    write_text_atomic(paths[1], markdown)
    write_json_atomic(paths[2], _json_safe(summary))
    if verbose:
        print(f"\n{markdown}")
        print(_last_line(summary, time.perf_counter() - start, paths))
    return _json_safe(summary)


def _last_line(summary, seconds, paths):
    """What was scored, how fast, each target's brain scores beside the baselines'."""
    figures = "; ".join(
        f"{t} PSNR {_mean(e['psnr_brain'], 2)} dB, SSIM {_mean(e['ssim_brain'], 4)}"
        + _beside(summary, t)
        for t, e in summary["targets"].items()
    )
    return (
        f"{len(summary['volumes'])} volumes of {summary['cases']} cases in {seconds:.1f}s, "
        f"over the brain: {figures}; wrote {', '.join(paths)}"
    )


def _mean(stat, digits):
    return "n/a" if stat["mean"] is None else f"{stat['mean']:.{digits}f}"


def _beside(summary, target):
    """ " (baselines from t2: copy 17.90, LUT 22.99 dB)": the baselines' brain PSNR."""
    shown = [
        ("copy " if b == "copy_source" else "LUT ")
        + _mean(entry["targets"][target]["psnr_brain"], 2)
        for b, entry in summary["baselines"].items()
        if target in entry["targets"]
    ]
    source = summary["baseline_sources"].get(target)
    return f" (baselines from {source}: {', '.join(shown)} dB)" if shown else ""


def _lut_of(truth_cases, truth_root, split_from, lut_from, by_case, verbose):
    """`_fit_lut` on `lut_from`'s training cases (from the root its manifest names: a
    case id there is another case unless that root is `truth_root`), else on
    `split_from`'s train split read from the truth root."""
    lut_cases, train, scored = truth_cases, None, set(by_case)
    if lut_from is not None:
        lut_cases, train = _training_cases(lut_from)
        if os.path.realpath(_manifest_root(lut_from)) != os.path.realpath(truth_root):
            scored = set()
    elif split_from is not None:
        train = _split_case_ids(split_from, "train", missing_ok=True)
    lut, record = _fit_lut(lut_cases, train, scored, verbose)
    if lut_from is not None:
        record["from"] = os.path.abspath(lut_from)
    return lut, record


def _fit_lut(truth_cases, train_ids, scored_ids, verbose):
    """(the fitted `VolumeLUT` or None, what summary.json records of it): fitted on
    whole training volumes of the cases `train_ids` lists, read from the truth root,
    never on a scored case (`volume_baselines.lut_case_ids`)."""
    from dygan_tf.data.cases import check_case

    if train_ids is None:
        return None, {"fitted": False, "why": "no --split-from: no training cases to fit on"}
    chosen, left = volume_baselines.lut_case_ids(train_ids, truth_cases, scored_ids)
    if not chosen:
        why = (
            f"none of the split's {left['training_cases']} training cases is in the truth "
            "root (or all are scored)"
        )
        return None, {"fitted": False, "why": why, **left}
    lut = volume_baselines.VolumeLUT()
    progress = Progress(len(chosen), unit="training case", enabled=verbose)
    for cid in chosen:
        files = check_case(truth_cases[cid])
        real = {m: read_scored(files[m]) for m in MODALITIES}
        brain = preprocessing.brain_mask(real.values())
        lut.update({m: scale_to_unit(v, brain) for m, v in real.items()}, brain)
        progress.add(1)
    progress.close()
    return lut.finish(), {"fitted": True, "cases": len(chosen), **left}


def _manifest_root(shards):
    """The BraTS root a shard folder's (or manifest.json's) manifest was built from."""
    from dygan_tf.data import manifest as manifest_lib

    folder = shards
    if os.path.basename(os.path.normpath(shards)) == manifest_lib.MANIFEST:
        folder = os.path.dirname(os.path.abspath(shards))
    return manifest_lib.read_manifest(folder)["source_root"]


def _training_cases(lut_from):
    """({case id: case} of the BraTS root `lut_from`'s manifest names, the ids of its
    train split): the cases the LUT is fitted on; refuses a root that is gone."""
    from dygan_tf.data.cases import discover_cases

    root = _manifest_root(lut_from)
    if not os.path.isdir(root):
        raise UserError(
            f"--lut-from {lut_from}: its manifest's source_root {root} is not a folder; "
            "expected the BraTS root its shards were built from"
        )
    cases = {c["case_id"]: c for c in discover_cases(root)}
    return cases, _split_case_ids(lut_from, "train")


def output_paths(out_dir):
    """[per_case.csv, summary.md, summary.json] in `out_dir`."""
    return [os.path.join(out_dir, n) for n in (CSV_NAME, MARKDOWN_NAME, JSON_NAME)]


def _matched_predictions(pred_dir, truth_root, split_from, split):
    """The predictions under `pred_dir` of the split's cases, each checked against its
    real volume's header (bad input is refused here, before any voxel is read).

    Returns ({case id: checked case files}, {case id: {target: prediction path}}, the
    number of predictions, (other NIfTI files, predictions outside the split), {case id:
    case} of every case of the truth root, the case ids the split asks for)."""
    from dygan_tf.data.cases import check_case, discover_cases

    if not os.path.isdir(truth_root):
        raise UserError(f"{truth_root}: not a folder; expected the BraTS root of real volumes")
    cases = {c["case_id"]: c for c in discover_cases(truth_root)}
    wanted = set(cases) if split_from is None else _split_case_ids(split_from, split)
    real_files = [
        os.path.join(c["folder"], n) for c in cases.values() for n in os.listdir(c["folder"])
    ]
    found, unmatched = find_predictions(pred_dir, sorted(cases), exclude=real_files)
    outside_split = sum(1 for cid, _ in found if cid not in wanted)
    found = {key: path for key, path in found.items() if key[0] in wanted}
    if not found:
        what = f" of split {split!r}" if split_from is not None else ""
        raise UserError(
            f"{pred_dir}: no predictions{what} found; expected NIfTI files whose names hold "
            f"a case id of {truth_root} and one modality ({', '.join(MODALITIES)}), "
            "e.g. <case>_flair_synth.nii.gz"
        )
    by_case = {}
    for (cid, target), path in sorted(found.items()):
        by_case.setdefault(cid, {})[target] = path
    files = {}
    for cid, predictions in by_case.items():  # headers only: refuse bad input fast
        files[cid] = check_case(cases[cid])
        for target, path in predictions.items():
            _check_same_grid(path, files[cid][target])
    return files, by_case, len(found), (unmatched, outside_split), cases, wanted


def _score_cases(files, by_case, crop, lut, verbose, with_baselines=True):
    """One row per (case, target) of every metric (`evaluate_case`), and the baselines'
    rows (none without `with_baselines`), with progress."""
    progress = Progress(len(by_case), unit="case", enabled=verbose)
    rows, baselines = [], []
    for cid, predictions in by_case.items():
        scored, reference = evaluate_case(files[cid], predictions, crop, lut, with_baselines)
        rows += [{"case_id": cid, **row} for row in scored]
        baselines += [{"case_id": cid, **row} for row in reference]
        progress.add(1)
    progress.close()
    return rows, baselines
