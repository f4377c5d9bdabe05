"""Preprocessing, the shard builder and the tf.data reader, on a small phantom."""

import glob
import gzip
import hashlib
import json
import os

import nibabel as nib
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.config import tasks
from dygan_tf.data import case_slices, nifti, pipeline, preprocessing, records, shards
from dygan_tf.data.manifest import read_manifest
from dygan_tf.utils.errors import UserError
from tests.helpers import (
    BUILD_ARGS,
    IMAGE_SIZE,
    PHANTOM_HGG,
    PHANTOM_LGG,
    TRAIN_HGG,
    TRAIN_LGG,
    case_folder,
)


# ------------------------------------------------------------------ pure functions
@pytest.mark.parametrize(
    "affine",
    [
        np.diag([-1.0, -1.0, 1.0, 1.0]),
        np.array([[0, 0, 1.0, 3], [-1.0, 0, 0, 2], [0, 1.0, 0, 1], [0, 0, 0, 1]]),
        np.diag([1.0, -2.0, -1.5, 1.0]),
    ],
)
def test_canonical_matches_nibabel_and_inverts(affine):
    volume = np.random.default_rng(0).random((3, 5, 4)).astype(np.float32)
    reference = nib.as_closest_canonical(nib.Nifti1Image(volume, affine))
    canonical, canonical_affine, ornt = preprocessing.to_canonical(volume, affine)
    np.testing.assert_array_equal(canonical, reference.get_fdata(dtype=np.float32))
    np.testing.assert_allclose(canonical_affine, reference.affine)
    np.testing.assert_array_equal(preprocessing.from_canonical(canonical, ornt), volume)


def test_select_slices_largest_area_ties_to_lower_index():
    mask = np.zeros((8, 8, 100), dtype=bool)
    for k, n in {75: 2, 76: 3, 77: 3, 80: 5, 84: 4, 85: 4, 90: 8}.items():
        mask[:n, :n, k] = True
    assert preprocessing.select_slices(mask, (75, 86), 4) == [76, 80, 84, 85]
    assert preprocessing.select_slices(mask, (75, 86), 3) == [80, 84, 85]
    assert preprocessing.select_slices(mask, (76, 78), 1) == [76]
    with pytest.raises(ValueError):
        preprocessing.select_slices(mask, (95, 101), 2)


def test_normalize_denormalize():
    volume = np.array([0.0, 50.0, 100.0, 250.0], dtype=np.float32)
    out = preprocessing.normalize(volume, 100.0)
    np.testing.assert_allclose(out, [-1.0, 0.0, 1.0, 1.0])
    np.testing.assert_allclose(preprocessing.denormalize(out[:3], 100.0), volume[:3])
    mask = np.ones(1000, dtype=bool)
    values = np.arange(1000, dtype=np.float32)
    assert preprocessing.robust_max(values, mask) == pytest.approx(np.percentile(values, 99.5))


def _percentile_cases():
    rng = np.random.default_rng(0)
    cases = [
        np.full(n, 7, dtype) for dtype in (np.int16, np.uint8, np.float32) for n in (1, 2, 5, 1000)
    ]  # constant data
    cases += [np.array([v], np.int16) for v in (-32768, 0, 32767)]  # one voxel
    cases += [
        np.array([-32768, 32767], np.int16),  # b - a overflows int16, as in numpy
        np.array([0, 65535], np.uint16),
        np.array([3, 1, 2], np.int8),
    ]
    for dtype in (np.int8, np.uint8, np.int16, np.uint16, np.int32, np.uint32):
        info = np.iinfo(dtype)
        for n in (3, 200, 201, 4099):
            cases.append(rng.integers(info.min, info.max, n, dtype, endpoint=True))
            cases.append(rng.integers(max(info.min, -3), 40, n, dtype))  # few levels
    cases.append(rng.integers(0, 1200, 1_500_000).astype(np.int16))  # a brain's worth
    cases.append(rng.integers(-100, 3000, 10_001).astype(">i2"))  # big-endian NIfTI
    cases.append(rng.integers(-(2**31), 2**31, 50, np.int64))  # wide: partitioned
    for scale in (1e-3, 1.0, 1e30):
        cases.append((rng.standard_normal(1001) * scale).astype(np.float32))
    cases.append(rng.standard_normal(999))
    cases.append(np.array([1.0, np.nan, 3.0]))
    return cases


@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # numpy's too
@pytest.mark.parametrize("q", [99.5, 0.0, 0.5, 25.0, 50.0, 100.0, 37.3])
def test_exact_percentile_equals_numpy_bit_for_bit(q):
    for values in _percentile_cases():
        expected = float(np.percentile(values, q, method="linear"))
        got = preprocessing.exact_percentile(values, q)
        assert got == expected or (np.isnan(got) and np.isnan(expected)), (
            values.dtype,
            values.size,
            q,
            got,
            expected,
        )


def test_exact_percentile_refuses_what_numpy_would_not_compute():
    with pytest.raises(ValueError):
        preprocessing.exact_percentile(np.zeros(0, np.int16), 50)
    with pytest.raises(ValueError):
        preprocessing.exact_percentile(np.zeros(3, np.int16), 100.5)


@pytest.mark.parametrize("order", ["F", "C"])
def test_robust_max_equals_percentile_of_brain_voxels(order):
    rng = np.random.default_rng(2)
    volume = np.asarray(rng.integers(0, 900, (24, 20, 16)).astype(np.int16), order=order)
    mask = np.asarray(rng.random(volume.shape) < 0.3, order=order)
    for v, m in (
        (volume, mask),
        (volume[::-1, :, ::-1], mask[::-1, :, ::-1]),
        (volume, mask.copy(order="C")),
    ):
        assert preprocessing.robust_max(v, m) == float(np.percentile(v[m], 99.5))
    one = np.zeros_like(mask)
    one[3, 4, 5] = True  # a mask of one voxel
    assert preprocessing.robust_max(volume, one) == float(max(volume[3, 4, 5], 1))
    assert preprocessing.robust_max(volume, np.zeros_like(mask)) == 1.0


@pytest.mark.parametrize("kind", ["int16", "big_endian", "float32", "scaled", "two_members", "nii"])
def test_load_nifti_gives_nibabel_array(tmp_path, kind):
    rng = np.random.default_rng(3)
    volume = rng.integers(-5, 900, (12, 10, 8)).astype(np.int16)
    if kind == "float32":
        volume = volume.astype(np.float32) / 7
    header = nib.Nifti1Header(endianness=">" if kind == "big_endian" else "<")
    header.set_data_dtype(volume.dtype.newbyteorder(header.endianness))
    image = nib.Nifti1Image(volume, np.diag([-1.0, -1.0, 1.0, 1.0]), header)
    if kind == "scaled":
        image.header.set_slope_inter(0.5, 10.0)
    path = tmp_path / ("v.nii" if kind == "nii" else "v.nii.gz")
    nib.save(image, str(path))
    if kind == "two_members":  # as bgzip writes: a valid gzip file of two members
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[:1000], mtime=0) + gzip.compress(raw[1000:]))
    data, affine, _ = nifti.load_nifti(path)
    expected = np.asanyarray(nib.load(str(path)).dataobj)
    assert data.dtype == expected.dtype and data.shape == expected.shape
    assert (data.dtype.byteorder == ">") == (kind == "big_endian")
    np.testing.assert_array_equal(data, expected)
    np.testing.assert_array_equal(affine, image.affine)


def test_load_nifti_names_a_corrupt_gzip_file(tmp_path):
    path = tmp_path / "v.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((12, 10, 8), np.int16), np.eye(4)), str(path))
    payload = bytearray(path.read_bytes())
    payload[-6] ^= 0xFF  # the stored CRC no longer matches the data
    path.write_bytes(bytes(payload))
    with pytest.raises(UserError, match="v.nii.gz: truncated or unreadable data"):
        nifti.load_nifti(path)


def test_resize_slice_shapes_and_nearest_labels():
    image = np.random.default_rng(1).random((240, 240)).astype(np.float32)
    assert preprocessing.resize_slice(image, 256).shape == (256, 256)
    labels = np.zeros((240, 240), np.uint8)
    labels[100:140, 90:150] = 4
    resized = preprocessing.resize_slice(labels, 256, order=0)
    assert resized.shape == (256, 256) and set(np.unique(resized)) == {0, 4}
    plane = np.arange(12.0).reshape(3, 4)
    np.testing.assert_array_equal(
        preprocessing.axial_plane(preprocessing.axial_slice(plane[..., None], 0)), plane
    )


def test_load_nifti_refuses_absurd_header_before_reading(tmp_path):
    header = nib.Nifti1Header()
    header.set_data_shape((4000, 4000, 4000))
    header.set_data_dtype(np.int16)
    path = tmp_path / "huge.nii"
    with open(path, "wb") as f:  # a header and 16 bytes: reading data would fail
        f.write(header.binaryblock + b"\0" * 4 + b"\0" * 16)
    with pytest.raises(UserError, match="huge.nii: header claims shape"):
        nifti.load_nifti(path)


def test_flipped_affine_gives_same_slices(phantom_root, tmp_path):
    folder, cid = case_folder(phantom_root)
    flipped = tmp_path / cid
    flipped.mkdir()
    for key in ("t1", "t1ce", "t2", "flair", "seg"):
        image = nib.load(os.path.join(folder, f"{cid}_{key}.nii.gz"))
        volume = np.asanyarray(image.dataobj)
        n0, n2 = volume.shape[0], volume.shape[2]
        # Voxel i -> n-1-i along axes 0 and 2; the affine absorbs the flip, so the
        # world (and canonical) image is unchanged.
        flip = np.array(
            [[-1, 0, 0, n0 - 1], [0, 1, 0, 0], [0, 0, -1, n2 - 1], [0, 0, 0, 1]], dtype=float
        )
        nib.save(
            nib.Nifti1Image(volume[::-1, :, ::-1].copy(), image.affine @ flip),
            str(flipped / f"{cid}_{key}.nii"),
        )
    options = dict(image_size=IMAGE_SIZE, slice_range=(75, 86), per_volume=5)
    a = case_slices.prepare_case({"case_id": cid, "grade": "HGG", "folder": folder}, **options)
    b = case_slices.prepare_case(
        {"case_id": cid, "grade": "HGG", "folder": str(flipped)}, **options
    )
    assert a["slices"] == b["slices"] and a["robust_max"] == b["robust_max"]
    for m in tasks.MODALITIES:
        np.testing.assert_array_equal(a["images"][m], b["images"][m])
    np.testing.assert_array_equal(a["seg"], b["seg"])


# ----------------------------------------------------------- schema and round trip
def test_schema_is_shared_by_writer_and_reader(tfrecord_dir):
    manifest = read_manifest(tfrecord_dir)
    assert manifest["schema"] == records.schema_description()
    assert shards.records is records and pipeline.records is records
    images = {m: np.full((4, 4), i / 4, np.float32) for i, m in enumerate(tasks.MODALITIES)}
    seg = np.arange(16, dtype=np.uint8).reshape(4, 4)
    serialized = records.serialize_example(
        "c", "HGG", 7, images, seg=seg, brain_mask=np.ones((4, 4), np.uint8)
    )
    parsed = records.parse_example(tf.constant(serialized), 4)
    assert parsed["case_id"].numpy() == b"c" and int(parsed["slice_index"]) == 7
    for m in tasks.MODALITIES:
        np.testing.assert_array_equal(parsed[m].numpy(), images[m])
    np.testing.assert_array_equal(parsed["seg"].numpy(), seg)


def test_round_trip_shapes_ranges_counts_and_tasks(tfrecord_dir, phantom_root):
    manifest = read_manifest(tfrecord_dir)
    train, test = manifest["splits"]["train"], manifest["splits"]["test"]
    assert [c["grade"] for c in train["cases"]].count("HGG") == TRAIN_HGG
    assert [c["grade"] for c in train["cases"]].count("LGG") == TRAIN_LGG
    assert len(test["cases"]) == PHANTOM_HGG + PHANTOM_LGG - TRAIN_HGG - TRAIN_LGG
    assert train["records"] == 5 * len(train["cases"])
    targets = ("flair", "t1", "t1ce")
    codes = np.stack([tasks.task_code("t2", t) for t in targets])
    ds = pipeline.make_dataset(tfrecord_dir, "train", batch_slices=2, return_meta=True)
    rows = 0
    by_case = {}
    for image, target, task, meta in ds:
        b = image.shape[0]
        assert image.shape == target.shape == (b, IMAGE_SIZE, IMAGE_SIZE, 1)
        assert image.dtype == target.dtype == tf.float32 and task.shape == (b, 12)
        assert -1.0 <= float(tf.reduce_min(image)) and float(tf.reduce_max(target)) <= 1.0
        np.testing.assert_array_equal(task.numpy(), np.tile(codes, (b // 3, 1)))
        assert meta["seg"].shape == (b, IMAGE_SIZE, IMAGE_SIZE, 1)
        for r in range(0, b, 3):
            key = (meta["case_id"][r].numpy().decode(), int(meta["slice_index"][r]))
            by_case[key] = (
                image[r, ..., 0].numpy(),
                [target[r + t, ..., 0].numpy() for t in range(3)],
            )
        rows += b
    assert rows == 3 * train["records"]
    # Reference computation: the same case prepared directly, without TFRecords.
    case = train["cases"][0]
    folder, _ = case_folder(phantom_root, int(case["case_id"].split("_")[2]) - 1, case["grade"])
    ref = case_slices.prepare_case(
        {"case_id": case["case_id"], "grade": case["grade"], "folder": folder},
        image_size=IMAGE_SIZE,
        slice_range=(75, 86),
        per_volume=5,
    )
    assert ref["slices"] == case["slices"]
    for n, k in enumerate(case["slices"]):
        source, stored = by_case[(case["case_id"], k)]
        np.testing.assert_array_equal(source, ref["images"]["t2"][n])
        for t, name in enumerate(targets):
            np.testing.assert_array_equal(stored[t], ref["images"][name][n])


def test_worker_sharding_splits_files(tfrecord_dir):
    def ids(ds):
        return {(m["case_id"][0].numpy(), int(m["slice_index"][0])) for *_, m in ds}

    whole = ids(pipeline.make_dataset(tfrecord_dir, "train", return_meta=True))
    parts = [
        ids(
            pipeline.make_dataset(
                tfrecord_dir, "train", return_meta=True, num_workers=2, worker_index=i
            )
        )
        for i in range(2)
    ]
    assert parts[0] and parts[1] and not parts[0] & parts[1]
    assert parts[0] | parts[1] == whole
    shuffled = pipeline.make_dataset(tfrecord_dir, "train", shuffle=8, seed=1, repeat=True)
    image, target, task = next(iter(shuffled))
    assert image.shape == (3, IMAGE_SIZE, IMAGE_SIZE, 1)


def test_reader_rejects_missing_or_malformed_manifest(tmp_path, tfrecord_dir):
    with pytest.raises(UserError, match="manifest.json: not found"):
        pipeline.make_dataset(tmp_path, "train")
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(UserError, match="manifest.json: unreadable"):
        read_manifest(tmp_path)
    manifest = json.loads((tfrecord_dir / "manifest.json").read_text())
    manifest["schema"]["version"] = 0
    (tmp_path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="schema"):
        read_manifest(tmp_path)


def test_build_is_deterministic(tfrecord_dir, phantom_root, tmp_path):
    # The session's shards were built from keywords; these from the same BuildOptions.
    again = shards.build(str(phantom_root), str(tmp_path), shards.BuildOptions(**BUILD_ARGS))
    first = read_manifest(tfrecord_dir)
    for split in ("train", "test"):
        assert again["splits"][split]["shards"] == first["splits"][split]["shards"]
        for shard in first["splits"][split]["shards"]:
            digest = hashlib.sha256((tmp_path / shard["file"]).read_bytes()).hexdigest()
            assert digest == shard["sha256"]
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["manifest.json"] + [s["file"] for sp in first["splits"].values() for s in sp["shards"]]
    )
    assert not glob.glob(str(tmp_path / ".partial-*"))


def test_build_takes_options_or_their_keywords_not_both(phantom_root, tmp_path):
    options = shards.BuildOptions(**BUILD_ARGS)
    assert options == shards.BuildOptions(**dict(BUILD_ARGS, compression="gzip"))
    with pytest.raises(TypeError, match="not both"):
        shards.build(str(phantom_root), str(tmp_path / "out"), options, seed=1)
    with pytest.raises(TypeError, match="must be a BuildOptions"):
        shards.build(str(phantom_root), str(tmp_path / "out"), dict(BUILD_ARGS))
    with pytest.raises(TypeError, match="shard_count"):
        shards.build(str(phantom_root), str(tmp_path / "out"), shard_count=2)
    assert not (tmp_path / "out").exists()
