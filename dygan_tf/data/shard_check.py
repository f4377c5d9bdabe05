"""Whether the shards on disk are the ones manifest.json describes (sha256, record count).

A flipped byte on network storage otherwise surfaces deep inside tf.data as
`DataLossError: corrupted record at N`, which names no file. `check_shards` (run by
`dygan_tf.data.pipeline.make_dataset` before reading) names the bad shard instead, and
`dygan-build-tfrecords --verify DIR` (`python -m dygan_tf.build_tfrecords` in a
checkout) checks every shard of a folder. A shard that goes bad after that check
(during a run) is named by `data_loss_error`, which training and evaluation raise in
place of TensorFlow's DataLossError.
"""

import gzip
import hashlib
import os
import struct
import zlib

from dygan_tf.data.manifest import MANIFEST, read_manifest
from dygan_tf.utils.errors import UserError

# (path, size, mtime_ns) -> sha256: a process checks each unchanged file once.
_DIGESTS = {}


def sha256_file(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _cached_sha256(path):
    stat = os.stat(path)
    key = (os.path.abspath(path), stat.st_size, stat.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_file(path)
    return _DIGESTS[key]


def _crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
        table.append(crc)
    return table


_CRC32C = _crc32c_table()


def masked_crc32c(data):
    """TFRecord's checksum: CRC-32C (Castagnoli) of `data`, rotated and offset."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC32C[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    crc ^= 0xFFFFFFFF
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def count_records(path, compression):
    """Records in one TFRecord file, counted by walking its framing (8-byte length, its
    masked CRC-32C, the record, 4 bytes of the record's CRC) in pure Python, so
    `--verify` runs without TensorFlow. Raises ValueError if the framing is broken (a
    length whose checksum fails, a file that ends inside a record); the records' own
    bytes are vouched for by the shard's sha256, which is checked first."""
    opener = gzip.open if compression == "gzip" else open
    count = 0
    with opener(path, "rb") as f:
        while header := f.read(12):
            if len(header) < 12:
                raise ValueError(f"the file ends inside the header of record {count + 1}")
            (length,) = struct.unpack("<Q", header[:8])
            if masked_crc32c(header[:8]) != struct.unpack("<I", header[8:])[0]:
                raise ValueError(f"the length of record {count + 1} fails its checksum")
            left = length + 4
            while left:
                block = f.read(min(left, 1 << 20))
                if not block:
                    raise ValueError(f"the file ends inside record {count + 1}")
                left -= len(block)
            count += 1
    return count


def shard_problem(tfrecord_dir, entry, compression=None, cached=True):
    """What is wrong with one manifest shard entry ({file, records, sha256}), or None.

    With `compression` given, a shard whose sha256 matches also has its records counted.
    `cached=False` hashes the file again even if its size and mtime are unchanged (bit
    rot on storage changes neither).
    """
    path = os.path.join(os.fspath(tfrecord_dir), entry["file"])
    try:
        digest = _cached_sha256(path) if cached else sha256_file(path)
    except FileNotFoundError:
        return "missing"
    except OSError as e:
        return f"unreadable ({e.strerror})"
    if entry.get("sha256") and digest != entry["sha256"]:
        return f"sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}..."
    if compression is not None:
        try:
            found = count_records(path, compression)
        except (OSError, EOFError, ValueError, zlib.error) as e:
            return f"unreadable records ({e})"
        if found != entry.get("records"):
            return f"{found} records; the manifest lists {entry.get('records')}"
    return None


def check_shards(tfrecord_dir, split, manifest=None):
    """UserError naming the first shard of `split` that is not as the build wrote it."""
    manifest = manifest or read_manifest(tfrecord_dir)
    for entry in manifest["splits"].get(split, {}).get("shards", []):
        problem = shard_problem(tfrecord_dir, entry)
        if problem:
            path = os.path.join(os.fspath(tfrecord_dir), entry["file"])
            raise UserError(
                f"{path}: corrupted or changed since the build ({problem}); restore it or "
                f"rebuild the shards (dygan-build-tfrecords --verify {tfrecord_dir} checks "
                "them all)"
            )


def verify(tfrecord_dir, report=print):
    """Checks every shard of the folder (sha256 and record count against its manifest);
    reports one line per shard; returns {file: problem} of the bad ones."""
    manifest = read_manifest(tfrecord_dir)
    bad = {}
    for split, part in manifest["splits"].items():
        for entry in part.get("shards", []):
            problem = shard_problem(tfrecord_dir, entry, manifest["compression"])
            report(f"{entry['file']}: {problem or 'ok'} ({split})")
            if problem:
                bad[entry["file"]] = problem
    return bad


def verify_or_raise(tfrecord_dir, report=print):
    """`verify`, then one UserError line naming every bad shard (if any)."""
    bad = verify(tfrecord_dir, report)
    if bad:
        listed = "; ".join(f"{name}: {why}" for name, why in sorted(bad.items()))
        raise UserError(
            f"{tfrecord_dir}: {len(bad)} shard(s) differ from {MANIFEST}: {listed}; "
            "restore them or rebuild"
        )


def data_loss_error(shards, splits, error):
    """The one-line UserError for a `tf.errors.DataLossError` met while reading `splits`
    of `shards` (a `ShardFolder`, or its path): it names the shards that fail
    verification now (hashed afresh, records counted), or the folder if every shard
    checks out."""
    from dygan_tf.data.shard_folder import open_shards

    shards = open_shards(shards)
    tfrecord_dir, manifest = shards.path, shards.manifest
    bad = []
    for split in dict.fromkeys(splits):
        for entry in manifest["splits"].get(split, {}).get("shards", []):
            problem = shard_problem(tfrecord_dir, entry, manifest["compression"], cached=False)
            if problem:
                bad.append(f"{os.path.join(os.fspath(tfrecord_dir), entry['file'])}: {problem}")
    hint = f"dygan-build-tfrecords --verify {tfrecord_dir} checks every shard"
    if bad:
        return UserError(
            f"{'; '.join(bad)}: corrupted while being read; restore the shard(s) or rebuild "
            f"them ({hint})"
        )
    reason = (getattr(error, "message", None) or str(error)).strip().splitlines()
    reason = reason[0].split("}} ")[-1] if reason else type(error).__name__
    return UserError(
        f"{tfrecord_dir}: a shard could not be read ({reason}), yet every shard of "
        f"{', '.join(dict.fromkeys(splits))} now matches {MANIFEST}; check the storage "
        f"({hint})"
    )
