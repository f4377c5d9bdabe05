"""`ShardFolder`: a shard folder opened once — its path, its manifest.json (schema,
image size, splits), its content sha256 — handed down from the command that opened it.

Commands open their shards with `ShardFolder.open` (or `open_shards`); every library
function below them takes the object, so a `fit` or an `evaluate` reads manifest.json
once. Python callers may still pass a folder path: `open_shards` opens it once.
"""

import functools
import os

from dygan_tf.data import manifest as manifest_lib
from dygan_tf.utils.errors import UserError


class ShardFolder:
    """A finished shard build (`dygan-build-tfrecords`): the folder and its manifest.

    Args:
        path: the folder.
        manifest: its manifest.json as `manifest.read_manifest` returned it.
    """

    def __init__(self, path, manifest):
        self.path = os.fspath(path)
        self.manifest = manifest

    @classmethod
    def open(cls, path):
        """Reads `path`/manifest.json once (one UserError line naming it if it is missing
        or not a finished build of this record schema)."""
        return cls(path, manifest_lib.read_manifest(path))

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    def __repr__(self):
        return f"ShardFolder({self.path!r})"

    @property
    def manifest_path(self):
        return manifest_lib.manifest_path(self.path)

    @property
    def image_size(self):
        return self.manifest["image_size"]

    @property
    def compression(self):
        return self.manifest["compression"]

    @property
    def context(self):
        """The axial neighbours K each slice was stored with (`--context`; 0: none)."""
        return manifest_lib.context_of(self.manifest)

    @property
    def splits(self):
        return self.manifest["splits"]

    @functools.cached_property
    def sha256(self):
        """`manifest.content_sha256`: what the folder holds, wherever it was built."""
        return manifest_lib.content_sha256(self.manifest)

    def split_cases(self, split):
        """The manifest's case entries (case_id, grade, slices, ...) of `split`."""
        if split not in self.splits:
            raise UserError(
                f"{self.manifest_path}: no split {split!r}; found {sorted(self.splits)}"
            )
        return self.splits[split]["cases"]

    def case_ids(self):
        """{split: sorted case ids}."""
        return manifest_lib.split_case_ids(self.manifest)

    def files(self, split):
        """Paths of the split's shards, in manifest order; UserError if one is missing."""
        return manifest_lib.shard_files(self.path, split, self.manifest)

    def record(self):
        """What a run folder records of these shards (run.json's "shards")."""
        return {
            "manifest_sha256": self.sha256,
            "splits": self.case_ids(),
            "image_size": self.image_size,
        }

    def require_image_size(self, model_size, model, hint):
        """Refuses these shards if their slice size differs from a model's
        (`manifest.require_image_size`)."""
        manifest_lib.require_image_size(self.path, model_size, model, hint, self.manifest)

    def require_context(self, model_context, model, hint):
        """Refuses these shards if they hold fewer axial neighbours than a model of
        `model_context` reads: one line naming the folder, both contexts and `hint`."""
        if model_context > self.context:
            raise UserError(
                f"{self.path}: shards were built with --context {self.context}, {model} "
                f"reads --context {model_context}; {hint}"
            )

    def baseline(self):
        """The `ShardFolder` whose training split fits an evaluation's baselines: the one
        the manifest names in "baseline_from" (checked against the sha256 recorded),
        else this one."""
        found = manifest_lib.baseline_from(self.path, self.manifest)
        if found is None:
            return self
        folder, recorded = found
        other = ShardFolder.open(folder)
        manifest_lib.check_baseline(self.path, folder, recorded, other.manifest)
        return other


def open_shards(shards):
    """`shards` as a `ShardFolder`: itself if it is one, else its folder opened once."""
    if isinstance(shards, ShardFolder):
        return shards
    return ShardFolder.open(shards)
