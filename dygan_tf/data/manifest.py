"""The shard folder's manifest.json: its name, reading and checking it, and its parts.

`dygan-build-tfrecords` writes it last (atomically); every reader goes through
`read_manifest`, so only shards of a finished build are ever read.
"""

import hashlib
import json
import os

from dygan_tf.data import epoch_draw, records
from dygan_tf.utils.errors import UserError

MANIFEST = "manifest.json"
FORMAT = "dygan_tf.brats_slices"


def manifest_path(tfrecord_dir):
    return os.path.join(os.fspath(tfrecord_dir), MANIFEST)


def has_manifest(tfrecord_dir):
    """Whether a finished build is in `tfrecord_dir` (the manifest is written last)."""
    return os.path.isfile(manifest_path(tfrecord_dir))


def read_manifest(tfrecord_dir):
    """The folder's manifest.json as a dict; UserError naming the file if it is missing,
    not JSON, lacks a field or was written with another record schema."""
    path = manifest_path(tfrecord_dir)
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
    except FileNotFoundError:
        raise UserError(
            f"{path}: not found; expected the manifest that dygan-build-tfrecords writes last"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable manifest ({type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path}: expected a JSON object, found {type(manifest).__name__}")
    missing = [k for k in ("schema", "image_size", "compression", "splits") if k not in manifest]
    if missing:
        raise UserError(f"{path}: missing fields {missing}")
    if records.schema_context(manifest["schema"]) is None:
        raise UserError(
            f"{path}: record schema version "
            f"{manifest['schema'].get('version') if isinstance(manifest['schema'], dict) else '?'}"
            f" differs from this reader's (version {records.SCHEMA_VERSION}, or "
            f"{records.CONTEXT_SCHEMA_VERSION} with --context); rebuild the shards"
        )
    if not isinstance(manifest["image_size"], int) or manifest["image_size"] < 1:
        raise UserError(
            f"{path}: image_size {manifest['image_size']!r}; expected a positive integer"
        )
    draw = manifest.get(epoch_draw.FIELD, {})
    if not isinstance(draw, dict) or draw.get("kind") not in (None, *epoch_draw.RULES):
        raise UserError(
            f"{path}: {epoch_draw.FIELD} {draw!r}; expected a kind among "
            f"{sorted(epoch_draw.RULES)} (shards of a newer dygan_tf?)"
        )
    return manifest


def split_case_ids(manifest):
    """{split: sorted case ids} of a manifest."""
    return {
        split: sorted(c["case_id"] for c in entry["cases"])
        for split, entry in manifest["splits"].items()
    }


def shard_record(tfrecord_dir, manifest=None):
    """What a run folder records of the shards it trains on (run.json's "shards"): the
    manifest's sha256, each split's case ids and the image size."""
    manifest = manifest or read_manifest(tfrecord_dir)
    return {
        "manifest_sha256": manifest_sha256(tfrecord_dir),
        "splits": split_case_ids(manifest),
        "image_size": manifest["image_size"],
    }


def context_of(manifest):
    """The context K its shards were built with (`--context`; 0: one plane a slice)."""
    return records.schema_context(manifest["schema"])


def require_image_size(tfrecord_dir, model_size, model, hint, manifest=None):
    """Refuses shards whose slice size differs from a model's: one line naming the
    folder, both sizes and `hint` (what to do), instead of Keras's shape traceback."""
    size = (manifest or read_manifest(tfrecord_dir))["image_size"]
    if model_size is not None and size != model_size:
        raise UserError(
            f"{tfrecord_dir}: shards are {size} px, {model} expects {model_size} px; {hint}"
        )


def shard_files(tfrecord_dir, split, manifest=None):
    """Paths of the split's shards, in manifest order; UserError if one is missing."""
    manifest = manifest or read_manifest(tfrecord_dir)
    path = manifest_path(tfrecord_dir)
    if split not in manifest["splits"]:
        raise UserError(f"{path}: no split {split!r}; found {sorted(manifest['splits'])}")
    files = [
        os.path.join(os.fspath(tfrecord_dir), s["file"])
        for s in manifest["splits"][split]["shards"]
    ]
    for f in files:
        if not os.path.isfile(f):
            raise UserError(f"{f}: listed in {path} but missing; rebuild the shards")
    if not files:
        raise UserError(f"{path}: split {split!r} has no shards (no cases)")
    return files


def split_cases(tfrecord_dir, split):
    """The manifest's case entries (case_id, grade, slices, robust_max, ...) of a split."""
    manifest = read_manifest(tfrecord_dir)
    if split not in manifest["splits"]:
        raise UserError(
            f"{manifest_path(tfrecord_dir)}: no split {split!r}; found {sorted(manifest['splits'])}"
        )
    return manifest["splits"][split]["cases"]


# Where a build ran, not what it holds: left out of `content_sha256`.
LOCATION_FIELDS = ("source_root",)


def content_sha256(manifest):
    """sha256 of what a shard folder holds: its manifest (every shard's own sha256, the
    split, the schema and the preprocessing) as canonical JSON, without where the build
    ran (`LOCATION_FIELDS` and a split file's path), so one phantom built on two
    machines gives one hash.

    >>> a = {"source_root": "/a", "split": {"file": "/a/s.csv", "sha256": "0"}, "x": 1}
    >>> content_sha256(a) == content_sha256(dict(a, source_root="/b"))
    True
    """

    kept = {k: v for k, v in manifest.items() if k not in LOCATION_FIELDS}
    if isinstance(kept.get("split"), dict):
        kept["split"] = {k: v for k, v in kept["split"].items() if k != "file"}
    text = json.dumps(kept, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def manifest_sha256(tfrecord_dir):
    """`content_sha256` of a shard folder's manifest.json (it lists every shard's own
    sha256): what the folder holds, wherever it was built or moved to."""
    return content_sha256(read_manifest(tfrecord_dir))


def provenance_record(out, options):
    """The manifest's "provenance" and "baseline_from" fields of a build into `out`:
    where the volumes came from, and the shard folder (relative to `out`, with its
    manifest's sha256) whose training split fits the evaluation's baselines."""
    record = {}
    if options.provenance:
        record["provenance"] = dict(options.provenance)
    if options.baseline_from:
        source = options.baseline_from
        read_manifest(source)  # a finished build, or one line naming it
        record["baseline_from"] = {
            "path": os.path.relpath(os.path.abspath(source), os.path.abspath(out)),
            "manifest_sha256": manifest_sha256(source),
        }
    return record


def baseline_from(tfrecord_dir, manifest):
    """(folder, recorded sha256) of the manifest's "baseline_from": the shard folder whose
    training split fits an evaluation's baselines; None where it names none. UserError
    if that folder holds no finished build."""
    entry = manifest.get("baseline_from")
    if not entry:
        return None
    folder = os.path.normpath(os.path.join(os.fspath(tfrecord_dir), entry["path"]))
    if not has_manifest(folder):
        raise UserError(
            f"{manifest_path(tfrecord_dir)}: baseline_from {folder} has no manifest.json; "
            "build the training set's shards first (or pass --baseline-from)"
        )
    return folder, entry["manifest_sha256"]


def check_baseline(tfrecord_dir, folder, recorded, baseline_manifest):
    """UserError unless the baseline folder's manifest is the one `tfrecord_dir`'s
    manifest recorded (its `content_sha256`)."""
    if content_sha256(baseline_manifest) != recorded:
        raise UserError(
            f"{manifest_path(tfrecord_dir)}: baseline_from {folder} was rebuilt since "
            "(its manifest's sha256 differs from the one recorded); rebuild this folder"
        )


def baseline_dir(tfrecord_dir, manifest=None):
    """The shard folder whose training split fits the baselines of an evaluation on
    `tfrecord_dir`: its manifest's "baseline_from" (checked against the sha256 recorded),
    else the folder itself."""
    found = baseline_from(tfrecord_dir, manifest or read_manifest(tfrecord_dir))
    if found is None:
        return os.fspath(tfrecord_dir)
    folder, recorded = found
    check_baseline(tfrecord_dir, folder, recorded, read_manifest(folder))
    return folder
