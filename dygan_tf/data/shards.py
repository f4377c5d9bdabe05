"""BraTS volumes -> sharded TFRecords of normalised axial slices, plus manifest.json.

The library behind `dygan-build-tfrecords` (its usage and flags are in that
command's module and in docs/reference/cli.md).
"""

import concurrent.futures
import contextlib
import dataclasses
import glob
import os
import re
import shutil
import sys
import tempfile

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import epoch_draw, preprocessing, records
from dygan_tf.data import manifest as manifest_lib
from dygan_tf.data.build_plan import (
    SPLITS,
    BuildOptions,
    check_root_and_split,
    header_problems,
    plan_build,
    split_options,
)
from dygan_tf.data.case_slices import prepare_job, worker_context
from dygan_tf.data.cases import case_files
from dygan_tf.data.shard_check import sha256_file, verify_or_raise
from dygan_tf.utils.atomic import write_json_atomic
from dygan_tf.utils.cli import import_tensorflow_quietly, keywords_of
from dygan_tf.utils.errors import UserError, for_flag
from dygan_tf.utils.options import options_of
from dygan_tf.utils.progress import Progress

SHARD_PATTERN = re.compile(r"^(train|test)-\d{5}-of-\d{5}\.tfrecord(\.gz)?$")
STAGING_PREFIX = ".partial-build-"


# ---------------------------------------------------------------------------- shards
def shard_name(split, index, count, compression):
    return f"{split}-{index:05d}-of-{count:05d}.tfrecord" + (".gz" if compression == "gzip" else "")


def _case_examples(result, context=0):
    for n, index in enumerate(result["slices"]):
        yield records.serialize_example(
            result["case_id"],
            result["grade"],
            index,
            {m: result["images"][m][n] for m in MODALITIES},
            seg=result["seg"][n],
            brain_mask=result["brain_mask"][n],
            context=context,
        )


def _clean_stale(out):
    """Removes staging folders that a killed build left behind."""
    for path in glob.glob(os.path.join(out, STAGING_PREFIX + "*")):
        shutil.rmtree(path, ignore_errors=True)


@dataclasses.dataclass
class Written:
    """What `write_shards` wrote into the staging folder."""

    kept: dict  # per split, the manifest's record of each case written
    shards: dict  # per split, {"file", "records", "sha256"} of each shard
    skipped: list  # {"case_id", "grade", "reason"} of each bad case skipped
    rate: float  # cases per second


def build(brats_root, out, options=None, **fields):
    """Builds the shards and manifest.json in `out`; returns the manifest dict.

    The choices come as a `BuildOptions` or as its fields' keywords
    (`build(root, out, image_size=64, train_hgg=2)`), not both.
    """
    options = options_of(BuildOptions, options, fields, "build", "options")
    plan = plan_build(brats_root, options)
    problems = header_problems(plan.jobs, options.skip_bad)
    created, staging = _open_staging(out)
    written = write_shards(plan, problems, staging, out, created, options)
    manifest = build_manifest(brats_root, plan, written, options)
    manifest.update(manifest_lib.provenance_record(out, options))
    _write_manifest(manifest, staging, out)
    _publish(out, staging, written.shards)
    if options.verbose:
        print(
            f"Wrote {sum(m['records'] for m in manifest['splits'].values())} slices "
            f"from {sum(len(k) for k in written.kept.values())} cases to {out} "
            f"({written.rate:.2f} cases/s; {len(written.skipped)} skipped)"
        )
    return manifest


def _open_staging(out):
    """(whether `out` is new, a fresh staging folder inside it), stale ones removed."""
    created = not os.path.exists(out)  # removed again if the build fails
    try:
        os.makedirs(out, exist_ok=True)
        _clean_stale(out)
        staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out)
    except OSError as e:
        raise UserError(f"{out}: cannot create the shard folder ({e.strerror})") from None
    return created, staging


def write_shards(plan, problems, staging, out, created, options):
    """Prepares the cases in worker processes and writes their slices into the shards
    of `plan` in `staging` (`Written`). On any error the staging folder goes, and `out`
    too if this build `created` it; a write error becomes one line naming the file."""
    bar = Progress(len(plan.jobs), unit="case", enabled=options.verbose)
    pool = concurrent.futures.ProcessPoolExecutor(
        options.workers or os.cpu_count() or 1, mp_context=worker_context()
    )
    writer = _ShardWriter(staging, plan.plans, options.compression, options.context)
    try:
        _write_cases(pool, plan, problems, writer, options, bar)
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
        if _is_write_error(e, writer.tf):
            raise _write_error(os.path.join(out, writer.name or ""), e, out) from None
        raise
    pool.shutdown()
    return Written(writer.kept, writer.shards, writer.skipped, rate)


def _write_cases(pool, plan, problems, writer, options, bar):
    """Every case of `plan` in order, prepared by `pool` unless its header is bad;
    a bad case raises its error line unless `options.skip_bad`."""
    slice_options = {
        "image_size": options.image_size,
        "slice_range": _slice_range(options.source_slices),
        "per_volume": options.per_volume,
        "context": options.context,
    }
    results = pool.map(
        prepare_job, [(c, slice_options) for _, _, c in plan.jobs if c["case_id"] not in problems]
    )
    for split, pos, case in plan.jobs:
        if case["case_id"] in problems:
            status, result = "bad", problems[case["case_id"]]
        else:
            status, result = next(results)
        if status == "bad" and not options.skip_bad:
            raise UserError(result)
        writer.add_case(split, pos, case, status, result)
        bar.add(1)


def _slice_range(source_slices):
    """`BuildOptions.source_slices` as `prepare_case` takes it: "all", or (start, stop)."""
    if source_slices == preprocessing.ALL_SLICES:
        return preprocessing.ALL_SLICES
    return tuple(source_slices)


class _ShardWriter:
    """Writes the cases into the shards of a build's plan: each shard opened at the
    first case of its range, closed (its sha256 recorded in `shards`) at the last."""

    def __init__(self, staging, plans, compression, context=0):
        self.staging, self.plans, self.compression = staging, plans, compression
        self.context = context
        self.tf, self.options = None, None  # TensorFlow, once the first case is ready
        self.kept = {s: [] for s in SPLITS}
        self.shards = {s: [] for s in SPLITS}
        self.skipped = []
        self.writer, self.counts, self.name = None, None, None  # the open shard's

    def add_case(self, split, pos, case, status, result):
        """Case `pos` of `split`: its slices, or (a bad case) a warning and a record
        of it in `skipped`."""
        self._open_if_first(split, pos)
        if status == "bad":
            print(f"\nwarning: skipping {result}", file=sys.stderr)
            self.skipped.append(
                {"case_id": case["case_id"], "grade": case["grade"], "reason": result}
            )
        else:
            for record in _case_examples(result, self.context):
                self.writer.write(record)
                self.counts["records"] += 1
            self.kept[split].append(_case_record(case, result))
        self._close_if_last(split, pos)

    def _range(self, split, pos):
        """(index, (start, stop)) of the shard holding case `pos` of `split`."""
        return next((n, r) for n, r in enumerate(self.plans[split]) if r[0] <= pos < r[1])

    def _open_if_first(self, split, pos):
        if self.tf is None:
            # Imported once the first case is ready, while the workers go on; a
            # build that fails on its first case never pays for it.
            self.tf = import_tensorflow_quietly()
            self.options = self.tf.io.TFRecordOptions(
                compression_type="GZIP" if self.compression == "gzip" else ""
            )
        shard, (start, _) = self._range(split, pos)
        if pos == start:
            self.name = shard_name(split, shard, len(self.plans[split]), self.compression)
            path = os.path.join(self.staging, self.name)
            self.writer = self.tf.io.TFRecordWriter(path, self.options)
            self.counts = {"file": self.name, "records": 0}

    def _close_if_last(self, split, pos):
        _, (_, stop) = self._range(split, pos)
        if pos == stop - 1:
            self.writer.close()
            self.counts["sha256"] = sha256_file(os.path.join(self.staging, self.counts["file"]))
            self.shards[split].append(self.counts)


def _case_record(case, result):
    """The manifest's record of one written case."""
    keys = ("case_id", "grade", "slices", "robust_max", "has_seg", "volume_shape")
    return {
        **{k: result[k] for k in keys},
        "files": {k: os.path.basename(p) for k, p in case_files(case).items()},
    }


def build_manifest(brats_root, plan, written, options):
    """The manifest dict of a finished build."""
    return {
        "format": manifest_lib.FORMAT,
        "schema": records.schema_description(options.context),
        "source_root": os.path.abspath(brats_root),
        "layout": plan.layout,
        "image_size": options.image_size,
        "compression": options.compression,
        **slice_choice(options.source_slices, options.per_volume),
        "split": plan.split_record,
        "orientation": preprocessing.ORIENTATION,
        "normalization": dict(preprocessing.NORMALIZATION),
        "in_plane": dict(preprocessing.IN_PLANE),
        "splits": {
            s: {
                "cases": written.kept[s],
                "shards": written.shards[s],
                "records": sum(x["records"] for x in written.shards[s]),
            }
            for s in SPLITS
        },
        "skipped": written.skipped,
    }


def slice_choice(source_slices, per_volume):
    """The manifest's record of which slices a build keeps: "source_slices" and
    "per_volume" (the range's `per_volume` with the most brain); for "all" also the rule
    of a brain slice ("brain_slices") and how an epoch draws from such shards
    ("epoch_draw", `dygan_tf.data.epoch_draw`). Shards of a range record only the first
    two, as they always have."""
    if source_slices != preprocessing.ALL_SLICES:
        return {"source_slices": list(source_slices), "per_volume": per_volume}
    return {
        "source_slices": preprocessing.ALL_SLICES,
        "per_volume": None,
        "brain_slices": {
            "min_voxels": preprocessing.MIN_BRAIN_VOXELS,
            "rule": f"every axial slice with at least {preprocessing.MIN_BRAIN_VOXELS} "
            "brain voxel(s): non-zero in any modality, counted on the volume's own grid",
        },
        epoch_draw.FIELD: epoch_draw.record(epoch_draw.PER_CASE),
    }


def _write_manifest(manifest, staging, out):
    """Writes the manifest into the staging folder too: a full disk here leaves the
    previous build (shards and manifest) as it was."""
    try:
        write_json_atomic(manifest_lib.manifest_path(staging), manifest)
    except OSError as e:
        shutil.rmtree(staging, ignore_errors=True)
        raise _write_error(manifest_lib.manifest_path(out), e, out) from None


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


def build_or_verify(args):
    """`dygan-build-tfrecords`' parsed flags: `--verify DIR` checks a shard folder (pure
    Python: no TensorFlow start-up), else the shards of `--brats-root` are built in
    `--out`. One UserError line naming the flag for a missing or bad one, before any
    file is read."""
    if args.verify is not None:
        if args.brats_root or args.out:
            raise UserError(
                "dygan-build-tfrecords: --verify DIR checks shards; drop --brats-root/--out"
            )
        with for_flag("--verify"):
            verify_or_raise(args.verify)
        print(f"{args.verify}: every shard matches its manifest")
        return
    missing = [f for f, v in (("--brats-root", args.brats_root), ("--out", args.out)) if not v]
    if missing:
        raise UserError(
            f"dygan-build-tfrecords: the following arguments are required: {', '.join(missing)}"
        )
    vars(args).update(split_options(args))
    with for_flag("--source-slices"):
        args.source_slices = preprocessing.parse_source_slices(args.source_slices)
    if args.source_slices == preprocessing.ALL_SLICES and args.per_volume is not None:
        raise UserError(
            "--per-volume: counts the slices kept of a --source-slices range; "
            "--source-slices all keeps every brain slice: drop --per-volume"
        )
    args.per_volume = args.per_volume or preprocessing.DEFAULT_SLICES_PER_VOLUME
    check_root_and_split(args.brats_root, args.split_file)
    build(args.brats_root, args.out, BuildOptions(**keywords_of(BuildOptions, args)))
