"""What a run's shards held when it trained (run.json's "shards": the manifest's sha256,
each split's cases, the image size), and whether the shards a command now uses with the
run are still those: a folder rebuilt with another split is refused in one line that
says what changed (which cases moved split), unless the caller allows it."""

import os
import sys

from dygan_tf.data.shard_folder import open_shards
from dygan_tf.run_folder import files as run_files
from dygan_tf.run_folder.folder import open_run_folder
from dygan_tf.utils.errors import UserError

RECORD = run_files.SHARDS_RECORD
_SHOWN = 5  # case ids named per change; the rest are counted


class ChangedData(UserError):
    """The shards differ from those the run trained on (the caller may allow it)."""


def _ids(ids):
    ids = sorted(ids)
    shown = ", ".join(ids[:_SHOWN])
    return shown + (f" and {len(ids) - _SHOWN} more" if len(ids) > _SHOWN else "")


def _cases(n):
    return f"{n} case{'' if n == 1 else 's'}"


def changes(recorded, now):
    """What differs between two shard records, one phrase each ([] when the manifests
    are the same bytes)."""
    if recorded.get("manifest_sha256") == now["manifest_sha256"]:
        return []
    before = {c: s for s, ids in recorded.get("splits", {}).items() for c in ids}
    after = {c: s for s, ids in now["splits"].items() for c in ids}
    moved, added, gone = {}, {}, {}
    for case, split in after.items():
        if case not in before:
            added.setdefault(split, []).append(case)
        elif before[case] != split:
            moved.setdefault((before[case], split), []).append(case)
    for case, split in before.items():
        if case not in after:
            gone.setdefault(split, []).append(case)
    # Cases moved into the test split first: the test scores no longer hold out.
    order = sorted(moved, key=lambda pair: (pair[1] != "test", pair))
    out = [f"{_cases(len(moved[p]))} moved from {p[0]} to {p[1]} ({_ids(moved[p])})" for p in order]
    out += [f"{_cases(len(ids))} added to {s} ({_ids(ids)})" for s, ids in sorted(added.items())]
    out += [f"{_cases(len(ids))} gone from {s} ({_ids(ids)})" for s, ids in sorted(gone.items())]
    if recorded.get("image_size") not in (None, now["image_size"]):
        out.append(f"image size {recorded['image_size']} -> {now['image_size']} px")
    return out or ["same cases in the same splits, the shards rebuilt"]


def _same_folder(run_dir, data_dir):
    """Whether `data_dir` is the shard folder the run recorded training on (by path:
    a rebuild happens in place)."""
    trained_on = open_run_folder(run_dir).data_dir()
    if not trained_on:
        return True
    return os.path.realpath(trained_on) == os.path.realpath(data_dir)


def recorded_shards(run_dir):
    """run.json's shard record, or None (no run.json, or a run of an earlier release)."""
    run = open_run_folder(run_dir)
    if not run.has(run_files.RUN_INFO):
        return None
    return run.read_info().get(RECORD)


def check(run_dir, shards, allow=False):
    """Whether `shards` (a `ShardFolder`, or its path) holds the shards `run_dir`
    trained on.

    Returns what a report records: {"run", "data", "manifest_sha256", "recorded" (the
    run's sha256, None if it records none), "changes" (phrases), "allowed"}. Raises
    `ChangedData` (one line: the folders, both hashes, what changed) when they differ
    and `allow` is false; prints one `warning:` line for a run folder of an earlier
    release, which records no hash, and for changed shards that `allow` lets through.
    """
    shards, run_dir = open_shards(shards), open_run_folder(run_dir)
    data_dir = shards.path
    recorded = recorded_shards(run_dir)
    now = shards.record()
    if recorded is not None and not _same_folder(run_dir, data_dir):
        # Another shard folder (a held-out test set): its own data, not a rebuild of the
        # run's; the report says whose shards were scored.
        recorded = dict(recorded, other_folder=True)
    result = {
        "run": run_dir.name,
        "data": os.path.basename(os.path.normpath(data_dir)),
        "manifest_sha256": now["manifest_sha256"],
        "recorded": None if recorded is None else recorded.get("manifest_sha256"),
        "changes": [],
        "allowed": bool(allow),
    }
    if recorded is None:
        if not run_dir.has(run_files.RUN_INFO):  # no training record at all (a folder
            return result  # assembled by hand): nothing to compare, nothing claimed
        print(
            f"warning: {run_dir.file(run_files.RUN_INFO)} records no manifest "
            f"hash (a run folder of an earlier release): whether the shards in {data_dir} "
            "are those it trained on cannot be checked",
            file=sys.stderr,
        )
        return result
    if recorded.get("other_folder"):
        result["other_shards"] = True
        return result
    result["changes"] = changes(recorded, now)
    if not result["changes"]:
        return result
    what = (
        f"{data_dir}: not the shards {run_dir} trained on (manifest.json sha256 "
        f"{recorded['manifest_sha256'][:12]} recorded, {now['manifest_sha256'][:12]} now): "
        + "; ".join(result["changes"])
    )
    if not allow:
        raise ChangedData(what)
    print(f"warning: {what}; used anyway, as allowed", file=sys.stderr)
    return result
