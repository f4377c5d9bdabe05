"""The MNI152 phantom: BraTS layout, tissue contrasts, tumour labels, determinism."""

import os

import nibabel as nib
import numpy as np

from dygan_tf.data import phantom
from tests.helpers import PHANTOM_HGG, PHANTOM_LGG, case_folder


def _volumes(root, index, grade):
    folder, cid = case_folder(root, index, grade)
    return {
        k: np.asanyarray(nib.load(os.path.join(folder, f"{cid}_{k}.nii.gz")).dataobj)
        for k in ("t1", "t1ce", "t2", "flair", "seg")
    }


def test_layout_and_headers(phantom_root):
    base = phantom_root / phantom.TRAINING_FOLDER
    assert len(os.listdir(base / "HGG")) == PHANTOM_HGG
    assert len(os.listdir(base / "LGG")) == PHANTOM_LGG
    lines = (base / "name_mapping.csv").read_text().splitlines()
    assert lines[0].startswith("Grade,") and len(lines) == 1 + PHANTOM_HGG + PHANTOM_LGG
    folder, cid = case_folder(phantom_root)
    image = nib.load(os.path.join(folder, f"{cid}_t1.nii.gz"))
    assert image.shape == (240, 240, 155) and image.get_data_dtype() == np.int16
    np.testing.assert_allclose(image.affine, phantom.AFFINE)
    assert nib.aff2axcodes(image.affine) == ("L", "P", "S")
    assert phantom.split_grades(10) == (8, 2) and phantom.split_grades(2) == (1, 1)


def test_contrasts_and_tumour(phantom_root):
    v = _volumes(phantom_root, 0, "HGG")
    # The case's tissue maps, regenerated from its seed (the first draw of make_case).
    mask, brain, tissue = phantom._deformed_templates(np.random.default_rng([0, 0]))
    healthy = v["seg"][brain] == 0
    csf, wm = (tissue["csf"] > 0.9) & healthy, (tissue["wm"] > 0.9) & healthy

    def median(key, where):
        return float(np.median(v[key][brain][where]))

    assert median("t2", csf) > 1.5 * median("t2", wm)  # CSF bright on T2
    assert median("flair", csf) < 0.6 * median("flair", wm)  # CSF dark on FLAIR
    assert median("t1", wm) > 1.5 * median("t1", csf)  # WM bright on T1
    rim, oedema = v["seg"] == 4, v["seg"] == 2
    wm_t1ce = median("t1ce", wm)
    assert np.median(v["t1ce"][rim]) > 1.2 * wm_t1ce  # enhancing rim bright on T1CE ...
    assert np.median(v["t1"][rim]) < median("t1", wm)  # ... and not on T1
    assert np.median(v["flair"][oedema]) > 1.5 * median("flair", wm)
    assert np.median(v["t2"][oedema]) > 1.5 * median("t2", wm)
    assert set(np.unique(v["seg"])) == {0, 1, 2, 4}
    assert (v["t1"][~mask] == 0).all() and (v["seg"][~mask] == 0).all()


def test_tumours_cross_the_source_slices(phantom_root):
    crossing = 0
    for index in range(PHANTOM_HGG + PHANTOM_LGG):
        grade = "HGG" if index < PHANTOM_HGG else "LGG"
        folder, cid = case_folder(phantom_root, index, grade)
        seg = np.asanyarray(nib.load(os.path.join(folder, f"{cid}_seg.nii.gz")).dataobj)
        crossing += bool(seg[:, :, 75:86].any())
    assert crossing >= (PHANTOM_HGG + PHANTOM_LGG) - 1


def test_serial_case_is_byte_identical_to_parallel(phantom_root, tmp_path):
    phantom.write_case(str(tmp_path), 0, 0, "HGG")  # fixture was built with 2 workers
    folder, cid = case_folder(phantom_root)
    again, _ = case_folder(tmp_path)
    for key in ("t1", "t1ce", "t2", "flair", "seg"):
        name = f"{cid}_{key}.nii.gz"
        with (
            open(os.path.join(folder, name), "rb") as a,
            open(os.path.join(again, name), "rb") as b,
        ):
            assert a.read() == b.read(), name
