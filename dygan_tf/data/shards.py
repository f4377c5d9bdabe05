"""BraTS volumes -> sharded TFRecords of normalised axial slices, plus manifest.json.

The library behind `python -m data_prep.build_tfrecords` (its usage and flags are in that
command's module and in docs/reference/cli.md).
"""

import concurrent.futures
import contextlib
import glob
import math
import os
import re
import shutil
import sys
import tempfile

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data import preprocessing, records
from dygan_tf.data.case_slices import prepare_job, worker_context
from dygan_tf.data.cases import (
    TRAIN_HGG,
    TRAIN_LGG,
    case_files,
    check_case,
    discover_cases,
    layout_of,
    read_split_file,
    split_cases,
    split_fraction,
)
from dygan_tf.data.shard_check import sha256_file
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import import_tensorflow_quietly
from dygan_tf.utils.errors import UserError
from dygan_tf.utils.progress import Progress

SPLITS = ("train", "test")
SHARD_PATTERN = re.compile(r"^(train|test)-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
STAGING_PREFIX = ".partial-build-"
DEFAULT_SLICES_PER_SHARD = 128


# ---------------------------------------------------------------------------- shards
def shard_plan(n_cases, per_volume, shards_per_split=None, slices_per_shard=None):
    """Per shard, the [start, stop) range of case positions (contiguous, balanced)."""
    if n_cases == 0:
        return []
    if shards_per_split is None:
        per_shard = slices_per_shard or DEFAULT_SLICES_PER_SHARD
        shards_per_split = math.ceil(n_cases * per_volume / per_shard)
    n = max(1, min(shards_per_split, n_cases))
    return [(s * n_cases // n, (s + 1) * n_cases // n) for s in range(n)]


def shard_name(split, index, count, compression):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if compression == "gzip" else "")


def _case_examples(result):
    for n, index in enumerate(result["slices"]):
        yield records.serialize_example(
            result["case_id"],
            result["grade"],
            index,
            {m: result["images"][m][n] for m in MODALITIES},
            seg=result["seg"][n],
            brain_mask=result["brain_mask"][n],
        )


def _clean_stale(out):
    """Removes staging folders that a killed build left behind."""
    for path in glob.glob(os.path.join(out, STAGING_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)


def choose_split(cases, train_hgg, train_lgg, seed, split_file=None, train_fraction=None):
    """({"train": [...], "test": [...]}, the manifest's "split" record)."""
    if split_file is not None:
        split = read_split_file(split_file, cases)
        record = {
            "rule": "split file: listed ids train (or as their column says); one column: "
            "the others test",
            "file": os.path.abspath(split_file),
            "sha256": sha256_file(split_file),
        }
    elif train_fraction is not None:
        split = split_fraction(cases, train_fraction, seed)
        record = {
            "seed": seed,
            "train_fraction": train_fraction,
            "rule": "per grade: sorted ids shuffled with seed, round(fraction * n) train",
        }
    else:
        split = split_cases(cases, train_hgg, train_lgg, seed)
        record = {
            "seed": seed,
            "train_hgg": train_hgg,
            "train_lgg": train_lgg,
            "rule": "per grade: sorted ids shuffled with seed, first train_<grade> "
            "train; grade 'unknown' trains train_hgg + train_lgg",
        }
    record["train_cases"] = [c["case_id"] for c in split["train"]]
    record["test_cases"] = [c["case_id"] for c in split["test"]]
    return split, record


def build(
    brats_root,
    out,
    image_size=preprocessing.DEFAULT_IMAGE_SIZE,
    train_hgg=TRAIN_HGG,
    train_lgg=TRAIN_LGG,
    source_slices=preprocessing.DEFAULT_SLICE_RANGE,
    per_volume=preprocessing.DEFAULT_SLICES_PER_VOLUME,
    workers=None,
    shards_per_split=None,
    slices_per_shard=None,
    compression="gzip",
    skip_bad=False,
    seed=0,
    verbose=True,
    split_file=None,
    train_fraction=None,
):
    """Builds the shards and manifest.json in `out`; returns the manifest dict.

    The split: `split_file` (`cases.read_split_file`), else `train_fraction` of each
    grade, else `train_hgg` + `train_lgg` cases (the paper's 220 + 60 of BraTS 2019).
    """
    workers = workers or os.cpu_count() or 1
    cases = discover_cases(brats_root)
    layout = layout_of(cases)
    split, split_record = choose_split(
        cases, train_hgg, train_lgg, seed, split_file, train_fraction
    )
    options = {
        "image_size": image_size,
        "slice_range": tuple(source_slices),
        "per_volume": per_volume,
    }
    plans = {
        s: shard_plan(len(split[s]), per_volume, shards_per_split, slices_per_shard) for s in SPLITS
    }
    jobs = [(s, pos, c) for s in SPLITS for pos, c in enumerate(split[s])]

    # Header problems (missing files, absurd sizes, mismatched grids) surface here,
    # before any voxel is read; data problems surface in the workers.
    header_problems = {}
    for _, _, case in jobs:
        try:
            check_case(case)
        except UserError as e:
            if not skip_bad:
                raise
            header_problems[case["case_id"]] = str(e)

    created = not os.path.exists(out)  # removed again if the build fails
    try:
        os.makedirs(out, exist_ok=True)
        _clean_stale(out)
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)
    except OSError as e:
        raise UserError(f"{out}: cannot create the shard folder ({e.strerror})") from None
    bar = Progress(len(jobs), unit="case", enabled=verbose)
    pool = concurrent.futures.ProcessPoolExecutor(workers, mp_context=worker_context())
    tf = None
    try:
        results = pool.map(
            prepare_job, [(c, options) for _, _, c in jobs if c["case_id"] not in header_problems]
        )
        tf_options = None
        kept = {s: [] for s in SPLITS}
        shards = {s: [] for s in SPLITS}
        skipped = []
        writer, counts, name = None, None, None
        for s, pos, case in jobs:
            if case["case_id"] in header_problems:
                status, result = "bad", header_problems[case["case_id"]]
            else:
                status, result = next(results)
            if status == "bad" and not skip_bad:
                raise UserError(result)
            if tf is None:
                # Imported once the first case is ready, while the workers go on; a
                # build that fails on its first case never pays for it.
                tf = import_tensorflow_quietly()
                tf_options = tf.io.TFRecordOptions(
                    compression_type="GZIP" if compression == "gzip" else ""
                )
            shard = next(n for n, (a, b) in enumerate(plans[s]) if a <= pos < b)
            if pos == plans[s][shard][0]:  # first case of a shard: open it
                name = shard_name(s, shard, len(plans[s]), compression)
                writer = tf.io.TFRecordWriter(os.path.join(staging, name), tf_options)
                counts = {"file": name, "records": 0}
            if status == "bad":
                print(f"\nwarning: skipping {result}", file=sys.stderr)
                skipped.append(
                    {"case_id": case["case_id"], "grade": case["grade"], "reason": result}
                )
            else:
                for record in _case_examples(result):
                    writer.write(record)
                    counts["records"] += 1
                kept[s].append(
                    {
                        **{
                            k: result[k]
                            for k in (
                                "case_id",
                                "grade",
                                "slices",
                                "robust_max",
                                "has_seg",
                                "volume_shape",
                            )
                        },
                        "files": {k: os.path.basename(p) for k, p in case_files(case).items()},
                    }
                )
            if pos == plans[s][shard][1] - 1:  # last case of a shard: close it
                writer.close()
                counts["sha256"] = sha256_file(os.path.join(staging, counts["file"]))
                shards[s].append(counts)
            bar.add(1)
        rate = bar.close()
    except BaseException as e:
        # Waits for the cases already being prepared (the rest are cancelled): a pool
        # left running races Python's exit, which can then print "Exception ignored ...
        # Bad file descriptor" after the one error line (CPython 3.11).
        pool.shutdown(wait=True, cancel_futures=True)
        shutil.rmtree(staging, ignore_errors=True)
        if created:
            with contextlib.suppress(OSError):
                os.rmdir(out)  # only if empty: a failed build leaves no folder behind
        if _is_write_error(e, tf):
            raise _write_error(os.path.join(out, name or ""), e, out) from None
        raise
    pool.shutdown()

    manifest = {
        "format": manifest_lib.FORMAT,
        "schema": records.schema_description(),
        "source_root": os.path.abspath(brats_root),
        "layout": layout,
        "image_size": image_size,
        "compression": compression,
        "source_slices": list(source_slices),
        "per_volume": per_volume,
        "split": split_record,
        "orientation": preprocessing.ORIENTATION,
        "normalization": dict(preprocessing.NORMALIZATION),
        "in_plane": dict(preprocessing.IN_PLANE),
        "splits": {
            s: {
                "cases": kept[s],
                "shards": shards[s],
                "records": sum(x["records"] for x in shards[s]),
            }
            for s in SPLITS
        },
        "skipped": skipped,
    }
    # The manifest is written into the staging folder too: a full disk here leaves the
    # previous build (shards and manifest) as it was.
    try:
        write_json_atomic(manifest_lib.manifest_path(staging), manifest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(manifest_lib.manifest_path(out), e, out) from None
    _publish(out, staging, shards)
    if verbose:
        print(
            f"Wrote {sum(m['records'] for m in manifest['splits'].values())} slices "
            f"from {sum(len(k) for k in kept.values())} cases to {out} "
            f"({rate:.2f} cases/s; {len(skipped)} skipped)"
        )
    return manifest


def _is_write_error(error, tf):
    return isinstance(error, OSError) or (tf is not None and isinstance(error, tf.errors.OpError))


def _write_error(path, error, out):
    reason = getattr(error, "strerror", None) or getattr(error, "message", None) or str(error)
    reason = str(reason).strip().splitlines()[-1].split("; ")[-1] if reason else type(error)
    return UserError(f"{path}: cannot write ({reason}); {out} holds what it held before this build")


def _publish(out, staging, shards):
    """Moves new shards and then the manifest (both finished in `staging`) into `out`:
    the old manifest goes first, so at no moment does a manifest list a shard that is
    not the one it describes."""
    old = manifest_lib.manifest_path(out)
    if os.path.exists(old):
        os.remove(old)
    new_names = {x["file"] for group in shards.values() for x in group}
    for name in os.listdir(out):
        if SHARD_PATTERN.match(name) and name not in new_names:
            os.remove(os.path.join(out, name))
    for name in sorted(new_names):
        os.replace(os.path.join(staging, name), os.path.join(out, name))
    os.replace(manifest_lib.manifest_path(staging), old)
    shutil.rmtree(staging, ignore_errors=True)
