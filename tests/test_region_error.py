"""research.region_error: the region split against hand-computed numbers, and the
command (`python -m research.region_error`) on a run folder (result, bad inputs as one
line with nothing written)."""

import numpy as np
import pytest

from research import region_error as region_error_lib
from tests.helpers import check_run_row_bad_inputs, run_row_command


def test_regions_partition_the_error_as_computed_by_hand():
    # One 4x4 slice in [0, 1]: column 0 background, the rest brain; seg labels 2, 1, 4
    # on three voxels of the brain.
    truth01 = np.full((1, 4, 4, 1), 0.5)
    fake01 = truth01.copy()
    brain = np.ones((1, 4, 4, 1), np.uint8)
    brain[:, :, 0] = 0
    seg = np.zeros((1, 4, 4, 1), np.uint8)
    seg[0, 0, 1, 0], seg[0, 1, 1, 0], seg[0, 2, 1, 0] = 2, 1, 4
    fake01[0, 0, 0, 0] = 0.6  # background: error 0.1
    fake01[0, 3, 3, 0] = 0.2  # healthy brain: error 0.3
    fake01[0, 0, 1, 0] = 0.9  # oedema: error 0.4
    fake01[0, 2, 1, 0] = 1.5  # rim: clipped to 1 -> error 0.5
    errors = region_error_lib.RegionErrors()
    errors.add(2 * truth01 - 1, 2 * fake01 - 1, seg, brain)
    result = errors.result()
    voxels = {
        "background": 4,
        "healthy brain": 9,
        "oedema": 1,
        "necrotic core": 1,
        "enhancing rim": 1,
    }
    sums = {
        "background": 0.1**2,
        "healthy brain": 0.3**2,
        "oedema": 0.4**2,
        "necrotic core": 0.0,
        "enhancing rim": 0.5**2,
    }
    total = sum(sums.values())
    for name in voxels:
        assert result[name]["voxels"] == voxels[name], name
        assert result[name]["mse"] == pytest.approx(sums[name] / voxels[name]), name
        assert result[name]["share"] == pytest.approx(sums[name] / total), name
    assert result["all"] == {"voxels": 16, "mse": pytest.approx(total / 16)}
    # A second batch adds to the same sums.
    errors.add(2 * truth01 - 1, 2 * truth01 - 1, seg, brain)
    assert errors.result()["oedema"]["mse"] == pytest.approx(0.4**2 / 2)
    assert errors.total_mse() == pytest.approx(total / 32)
    assert region_error_lib.RegionErrors().result()["oedema"]["mse"] is None  # nothing seen
    # A label outside the brain mask is tumour, not background; label 3 (BraTS before
    # 2017) is necrotic core: the regions still partition the slice.
    seg[0, 3, 0, 0] = 3
    errors = region_error_lib.RegionErrors()
    errors.add(2 * truth01 - 1, 2 * fake01 - 1, seg, brain)
    result = errors.result()
    assert result["background"]["voxels"] == 3 and result["necrotic core"]["voxels"] == 2
    assert sum(result[name]["voxels"] for name, _ in region_error_lib.REGIONS) == 16
    assert sum(result[name]["share"] for name, _ in region_error_lib.REGIONS) == pytest.approx(1)
    with pytest.raises(ValueError, match="must match"):
        errors.add(truth01, truth01[:, :2], seg, brain)


@pytest.mark.slow
def test_command_on_a_run_and_its_bad_inputs(run_dir, tfrecord_dir, tmp_path):
    result, saved = run_row_command(
        region_error_lib.main, run_dir, tfrecord_dir, tmp_path / "regions.json"
    )
    assert "t2->flair" in result.stdout and "(LUT from t2)" in result.stdout
    for name, _ in region_error_lib.REGIONS:
        assert f"\n{name} " in result.stdout, name
    assert (
        saved["row"] == "t2->flair" and saved["slices"] > 0 and saved["lut_source"] == "t2->flair"
    )
    for who in ("model", "lut"):
        shares = [saved[who][name]["share"] for name, _ in region_error_lib.REGIONS]
        assert sum(shares) == pytest.approx(1.0)
        voxels = sum(saved[who][name]["voxels"] for name, _ in region_error_lib.REGIONS)
        assert voxels == saved[who]["all"]["voxels"] == saved["slices"] * 64 * 64
        assert np.isfinite(saved[who]["all"]["mse"]) and saved[who]["all"]["mse"] > 0
    check_run_row_bad_inputs(region_error_lib.main, run_dir, tfrecord_dir, tmp_path)


def test_brats2023_gli_labels_land_in_their_regions_and_other_cohorts_are_refused():
    from dygan_tf.data import layouts
    from dygan_tf.utils.errors import UserError

    assert layouts.enhancing_label(None) == layouts.enhancing_label("brats2020") == 4
    gli = layouts.enhancing_label("brats2023", ["BraTS-GLI-00001-000", "BraTS-GLI-00002-000"])
    assert gli == 3
    # 2023 GLI: 1 necrotic (non-enhancing) core, 2 oedema, 3 enhancing tumour.
    seg = np.zeros((1, 2, 2, 1), np.uint8)
    seg[0, 0, 0, 0], seg[0, 0, 1, 0], seg[0, 1, 0, 0] = 1, 2, 3
    brain = np.ones_like(seg, bool)
    errors = region_error_lib.RegionErrors(gli)
    errors.add(np.zeros(seg.shape), np.zeros(seg.shape), seg, brain)
    voxels = {name: errors.result()[name]["voxels"] for name, _ in region_error_lib.REGIONS}
    assert voxels == {
        "background": 0,
        "healthy brain": 1,
        "oedema": 1,
        "necrotic core": 1,
        "enhancing rim": 1,
    }
    for ids in (["BraTS-PED-00001-000"], ["BraTS-GLI-00001-000", "BraTS-MEN-00002-000"]):
        with pytest.raises(UserError, match="labels are not mapped onto regions"):
            layouts.enhancing_label("brats2023", ids)
