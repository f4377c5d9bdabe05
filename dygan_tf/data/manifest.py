"""The shard folder's manifest.json: its name, reading and checking it, and its parts.

`dygan-build-tfrecords` writes it last (atomically); every reader goes through
`read_manifest`, so only shards of a finished build are ever read.
"""

import json
import os

from dygan_tf.data import records
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
    if manifest["schema"] != records.schema_description():
        raise UserError(
            f"{path}: record schema version "
            f"{manifest['schema'].get('version') if isinstance(manifest['schema'], dict) else '?'}"
            f" differs from this reader's (version {records.SCHEMA_VERSION}); "
            "rebuild the shards"
        )
    if not isinstance(manifest["image_size"], int) or manifest["image_size"] < 1:
        raise UserError(
            f"{path}: image_size {manifest['image_size']!r}; expected a positive integer"
        )
    return manifest


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
