"""NIfTI files from other scanners: each is translated with its geometry kept and its
in-plane aspect and spacing respected, or refused with one line.

A recording identity model stands in for the network: what it is fed shows whether a
slice reached the model's grid at the training spacing (a round disc stays round), and
its output, mapped back, must land where the source was.
"""

import os
import shutil

import nibabel as nib
import numpy as np
import pytest

from dygan_tf.data import case_slices as prepare
from dygan_tf.data import preprocessing
from dygan_tf.inference.predictor import Predictor
from dygan_tf.inference.translation import translate
from tests.helpers import IMAGE_SIZE, case_folder, one_error_line, run_cli

HEADER_KEYS = ("pixdim", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "dim")


class RecordingIdentity(Predictor):
    def __init__(self, size=IMAGE_SIZE):
        super().__init__(None, "identity", "keras", "identity", size)
        self.seen = []

    def __call__(self, images, tasks):
        self.seen.append(np.array(images))
        return np.array(images, dtype=np.float32)


def _disc_volume(shape, spacing, radius_mm=20.0, dtype=np.float32, value=100.0):
    """A disc of `radius_mm` (in world mm) in every axial slice, with a smooth ramp so
    the robust max is not the whole disc; returns data in voxel order."""
    x = (np.arange(shape[0]) - (shape[0] - 1) / 2) * spacing[0]
    y = (np.arange(shape[1]) - (shape[1] - 1) / 2) * spacing[1]
    r = np.hypot(*np.meshgrid(x, y, indexing="ij"))
    plane = np.where(r <= radius_mm, value * (1.5 - r / radius_mm / 2), 0.0)
    return np.repeat(plane[:, :, None], shape[2], axis=2).astype(dtype)


def _save(path, data, affine, slope=None, inter=None, dtype=None):
    image = nib.Nifti1Image(data, affine)
    if dtype is not None:
        image.set_data_dtype(dtype)
    if slope is not None:
        image.header.set_slope_inter(slope, inter)
    nib.save(image, path)
    return path


def _affine(spacing, rotation_deg=0.0):
    theta = np.deg2rad(rotation_deg)
    rot = np.array(
        [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    )
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag(spacing)
    affine[:3, 3] = [-50, -60, -10]
    return affine


def _disc_extent(image):
    """(rows, cols) of model-input pixels above the background (-1)."""
    inside = image > -0.99
    return int(inside.any(axis=1).sum()), int(inside.any(axis=0).sum())


CASES = {
    # name: (shape, spacing, rotation, dtype, slope/inter, 4-D)
    "non_square_1mm": ((80, 56, 3), (1.0, 1.0, 1.0), 0, np.float32, None, False),
    "anisotropic_in_plane": ((80, 48, 3), (1.0, 1.5, 3.0), 0, np.float32, None, False),
    "half_mm": ((128, 128, 2), (0.5, 0.5, 2.0), 0, np.float32, None, False),
    "oblique": ((72, 72, 3), (1.0, 1.0, 1.0), 20, np.float32, None, False),
    "four_d_singleton": ((64, 64, 2), (1.0, 1.0, 1.0), 0, np.float32, None, True),
    "scaled_int16": ((64, 64, 2), (1.0, 1.0, 1.0), 0, np.int16, (2.0, 10.0), False),
    "uint8": ((64, 64, 2), (1.0, 1.0, 1.0), 0, np.uint8, None, False),
    "int8": ((64, 64, 2), (1.0, 1.0, 1.0), 0, np.int8, None, False),
    "float64": ((64, 64, 2), (1.0, 1.0, 1.0), 0, np.float64, None, False),
    "single_slice": ((64, 64, 1), (1.0, 1.0, 1.0), 0, np.float32, None, False),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_other_scanners_keep_geometry_and_aspect(name, tmp_path):
    shape, spacing, rotation, dtype, scaling, four_d = CASES[name]
    value = 100.0 if dtype not in (np.uint8, np.int8) else 100
    data = _disc_volume(shape, spacing, dtype=np.float64, value=value)
    if scaling:  # stored = (value - inter) / slope, read back as value
        stored = np.rint((data - scaling[1]) / scaling[0]).astype(dtype)
        stored[data == 0] = 0
        data = stored
    else:
        data = np.rint(data).astype(dtype) if np.dtype(dtype).kind in "iu" else data.astype(dtype)
    if four_d:
        data = data[..., None]
    affine = _affine(spacing, rotation)
    path = _save(
        tmp_path / f"{name}_t2.nii.gz",
        data,
        affine,
        *(scaling or (None, None)),
        dtype=dtype,
    )
    model = RecordingIdentity()
    outputs = translate(
        model,
        str(path),
        str(tmp_path / "out"),
        targets=["flair"],
        verbose=False,
    )
    original = nib.load(path)
    written = nib.load(outputs["flair"])
    out = np.asanyarray(written.dataobj)
    assert out.shape == original.shape and out.dtype == np.float32
    np.testing.assert_array_equal(written.affine, original.affine)
    for key in HEADER_KEYS:
        np.testing.assert_array_equal(written.header[key], original.header[key], key)
    # The model saw a round disc of the physical radius at the training spacing
    # (20 mm = 40 px across at 1 mm), scaled onto the model grid of the padded square.
    fed = np.concatenate(model.seen)
    rows, cols = _disc_extent(fed[0, :, :, 0])
    assert abs(rows - cols) <= 2, (rows, cols)
    # Identity model: the output is the source, clipped at its robust max.
    source = np.asanyarray(original.dataobj, dtype=np.float64).reshape(out.shape)
    source = original.get_fdata().reshape(out.shape)
    mask = source != 0
    scale = preprocessing.robust_max(source, mask)
    expected = np.minimum(source, scale)
    assert not out[~mask].any()
    interior = mask & (expected > 0.3 * scale)
    err = np.abs(out[interior] - expected[interior]) / scale
    assert np.median(err) < 0.05, np.median(err)


def test_slice_grid_is_a_no_op_for_square_1mm_slices():
    rng = np.random.default_rng(0)
    image = rng.uniform(-1, 1, (40, 40)).astype(np.float32)
    grid = preprocessing.SliceGrid((40, 40))
    np.testing.assert_array_equal(grid.to_model(image, 64), preprocessing.resize_slice(image, 64))
    back = grid.from_model(grid.to_model(image, 64))
    assert back.shape == (40, 40)


def test_non_square_slice_is_padded_not_squeezed():
    grid = preprocessing.SliceGrid((60, 40))
    image = np.full((60, 40), 0.5, np.float32)
    model_input = grid.to_model(image, 60)
    assert _disc_extent(model_input) == (60, 40)  # the old squeeze gave (60, 60)
    np.testing.assert_allclose(grid.from_model(model_input), image, atol=1e-6)


def _write(path, data, affine):
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def _singular(path):
    header = nib.Nifti1Header()
    header.set_sform(np.diag([1.0, 1.0, 0.0, 1.0]), code=1)  # every slice on one plane
    nib.save(nib.Nifti1Image(np.ones((8, 8, 2), np.float32), None, header), path)
    return path


@pytest.mark.parametrize(
    "make, needle",
    [
        (lambda p: _write(p, np.ones((8, 8), np.float32), np.eye(4)), "2-D volume"),
        (lambda p: _write(p, np.ones((8, 8, 2, 3), np.float32), np.eye(4)), "4-D volume"),
        (_singular, "singular"),
    ],
)
def test_unusable_geometry_is_refused_in_one_line(make, needle, tmp_path):
    path = make(tmp_path / "bad_t2.nii.gz")
    before = sorted(os.listdir(tmp_path))
    line = one_error_line(
        run_cli("dygan_tf.translate", "--model", tmp_path, "--input", path, "--out-dir", tmp_path)
    )
    assert needle in line and str(path) in line, line
    assert sorted(os.listdir(tmp_path)) == before


def _copy_case(phantom_root, tmp_path, index=0):
    folder, cid = case_folder(phantom_root, index)
    root = tmp_path / "root"
    shutil.copytree(folder, root / cid)
    return root, root / cid, cid


def test_builder_refuses_non_1mm_voxels_in_one_line(phantom_root, tmp_path):
    root, case, cid = _copy_case(phantom_root, tmp_path)
    path = case / f"{cid}_flair.nii.gz"
    image = nib.load(path)
    affine = image.affine @ np.diag([1.0, 1.0, 3.0, 1.0])
    nib.save(nib.Nifti1Image(np.asanyarray(image.dataobj), affine, image.header), path)
    line = one_error_line(
        run_cli(
            "data_prep.build_tfrecords",
            "--brats-root",
            root,
            "--out",
            tmp_path / "out",
            "--train-hgg",
            1,
            "--train-lgg",
            0,
        )
    )
    assert str(path) in line and "voxel size 1 x 1 x 3 mm" in line, line
    assert not (tmp_path / "out").exists()


def test_builder_pads_non_square_slices_instead_of_squeezing(phantom_root, tmp_path):
    root, case, cid = _copy_case(phantom_root, tmp_path)
    options = dict(image_size=IMAGE_SIZE, slice_range=(75, 86), per_volume=5)
    full = prepare.prepare_case({"case_id": cid, "grade": "HGG", "folder": str(case)}, **options)
    # Crop 20 background voxels off both ends of canonical y (the phantom is in RAS-
    # flipped LPS voxel order, so that is voxel axis 1 either way).
    for path in case.iterdir():
        image = nib.load(path)
        data = np.asanyarray(image.dataobj)
        assert not data[:, :20].any() and not data[:, -20:].any(), path
        shift = np.eye(4)
        shift[1, 3] = 20
        nib.save(nib.Nifti1Image(data[:, 20:-20].copy(), image.affine @ shift, image.header), path)
    cropped = prepare.prepare_case({"case_id": cid, "grade": "HGG", "folder": str(case)}, **options)
    assert cropped["slices"] == full["slices"]
    for m in full["images"]:
        np.testing.assert_array_equal(cropped["images"][m], full["images"][m], m)
    np.testing.assert_array_equal(cropped["seg"], full["seg"])
    np.testing.assert_array_equal(cropped["brain_mask"], full["brain_mask"])
