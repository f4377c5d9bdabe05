"""Files other tools write, through the real commands: every NIfTI-1/NIfTI-2 volume is
read by the one reader, everything else nibabel opens (CIFTI-2, GIFTI, MINC, Analyze,
.hdr/.img pairs, series, 2-D and 5-D arrays) is refused with one line naming the file
and nothing written; NaN/inf voxels outside the field of view are background with one
`note:` line in translate and evaluate_volumes, and refused by the shard builder."""

import gzip
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from nibabel import cifti2

from data_prep import build_tfrecords
from dygan_tf import evaluate_volumes as evaluate_volumes_command
from dygan_tf import translate as translate_command
from dygan_tf.data import nifti, preprocessing
from dygan_tf.utils.errors import UserError
from tests.helpers import one_error_line, run_cli, run_in_process

pytestmark = pytest.mark.slow
SHAPE = (20, 24, 12)
AFFINE = np.diag([-1.0, 1.0, 1.0, 1.0])
MODALITIES = ("flair", "t1", "t1ce", "t2")
NIBABEL_DATA = os.path.join(os.path.dirname(nib.__file__), "tests", "data")


def _head(seed=0, shape=SHAPE):
    """A float32 'head': random intensities in a box, 0 around it."""
    rng = np.random.default_rng(seed)
    data = np.zeros(shape, np.float32)
    data[3:-3, 4:-4, 2:-2] = rng.uniform(50, 500, (shape[0] - 6, shape[1] - 8, shape[2] - 4))
    return data


def _with_nan_outside(data):
    """`data` with NaN (and one +inf) wherever it is 0: a resampled volume's outside."""
    out = data.copy()
    out[data == 0] = np.nan
    out[0, 0, 0] = np.inf
    return out


def _save(path, data, image_class=nib.Nifti1Image, affine=AFFINE):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    nib.save(image_class(data, affine), str(path))
    return path


# Builders of the refused kinds: each writes `<folder>/<stem>.<ext>` and returns the path.
def _cifti2(folder, stem, gzipped=False):
    brain = cifti2.BrainModelAxis.from_mask(_head()[:, :, :4] > 0, affine=AFFINE)
    scalar = cifti2.ScalarAxis(["thickness"])
    image = cifti2.Cifti2Image(np.ones((1, len(brain)), np.float32), header=(scalar, brain))
    path = os.path.join(folder, f"{stem}.dscalar.nii")
    image.to_filename(path)
    if gzipped:  # nibabel opens this one as a plain NIfTI-2 image
        with open(path, "rb") as f, gzip.open(path + ".gz", "wb") as g:
            g.write(f.read())
        os.remove(path)
        path += ".gz"
    return path


def _gifti(folder, stem):
    points = nib.gifti.GiftiDataArray(np.zeros((4, 3), np.float32), intent="NIFTI_INTENT_POINTSET")
    path = os.path.join(folder, f"{stem}.surf.gii")
    nib.save(nib.gifti.GiftiImage(darrays=[points]), path)
    return path


def _minc(name):
    def make(folder, stem):
        source = os.path.join(NIBABEL_DATA, name)
        if not os.path.isfile(source):
            pytest.skip(f"nibabel's sample file {name} is not installed (nibabel writes no MINC)")
        path = os.path.join(folder, f"{stem}.mnc")
        shutil.copy(source, path)
        return path

    return make


def _analyze(image_class, keep_img):
    def make(folder, stem):
        path = os.path.join(folder, f"{stem}.img")
        nib.save(image_class(_head(), AFFINE), path)
        if not keep_img:
            os.remove(path)
        return os.path.join(folder, f"{stem}.hdr")

    return make


def _array(shape):
    def make(folder, stem):
        return _save(os.path.join(folder, f"{stem}.nii.gz"), np.ones(shape, np.float32))

    return make


def _junk(suffix):
    def make(folder, stem):
        path = os.path.join(folder, f"{stem}{suffix}")
        with open(path, "wb") as f:
            f.write(b"not an image at all" * 20)
        return path

    return make


REFUSED = {
    # kind: (builder, words the one line holds besides the path)
    "cifti2": (_cifti2, "a CIFTI-2 file"),
    "cifti2_gz": (lambda f, s: _cifti2(f, s, gzipped=True), "a CIFTI-2 file"),
    "gifti": (_gifti, "a GIFTI surface file"),
    "minc1": (_minc("tiny.mnc"), "a MINC1 volume"),
    "minc2": (_minc("small.mnc"), "a MINC2 volume"),
    "analyze_hdr_without_img": (_analyze(nib.AnalyzeImage, False), "image file"),
    "analyze_pair": (_analyze(nib.AnalyzeImage, True), "an Analyze 7.5 image"),
    "nifti1_pair": (_analyze(nib.Nifti1Pair, True), "a NIfTI-1 .hdr/.img pair"),
    "series": (_array((*SHAPE, 3)), "a series of 3 volumes"),
    "two_d": (_array(SHAPE[:2]), "a 2-D volume"),
    "five_d": (_array((*SHAPE, 1, 3)), "a 5-D volume"),
    "junk": (_junk(".nii.gz"), "unreadable NIfTI file"),
    # nibabel's parsers of other formats fail with their own errors (XML, KeyError, ...).
    "junk_gifti": (_junk(".surf.gii"), "a file nibabel cannot read (ExpatError"),
    "junk_mgh": (_junk(".mgh"), "a file nibabel cannot read"),
    "junk_parrec": (_junk(".PAR"), "a file nibabel cannot read"),
}
EXPECTED = "expected a NIfTI-1 or NIfTI-2 volume"


def _tree(root):
    return sorted(str(p) for p in root.rglob("*"))


def test_the_reader_refuses_each_other_kind_naming_it(tmp_path):
    for kind, (make, words) in REFUSED.items():
        path = make(str(tmp_path), f"{kind}_t2")
        with pytest.raises(UserError) as caught:
            nifti.read_volume(path)
        line = str(caught.value)
        assert "\n" not in line and line.startswith(f"{path}: ") and words in line, (kind, line)
        if kind not in ("series", "two_d", "five_d"):
            assert EXPECTED in line, (kind, line)
    hdr_only = REFUSED["analyze_hdr_without_img"][0](str(tmp_path), "alone")
    with pytest.raises(UserError, match=r"alone\.img is missing"):
        nifti.read_header(hdr_only)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
@pytest.mark.parametrize("image_class", [nib.Nifti1Image, nib.Nifti2Image])
def test_the_reader_accepts_nifti1_and_nifti2_and_one_volume_4d(tmp_path, image_class, suffix):
    data = _head()
    for name, stored in (("three_d", data), ("one_volume", data[..., None])):
        path = _save(str(tmp_path / f"{name}{suffix}"), stored, image_class)
        volume = nifti.read_volume(path)
        assert volume.data.shape == SHAPE and volume.non_finite == 0
        np.testing.assert_array_equal(volume.data, data)
        np.testing.assert_array_equal(volume.affine, AFFINE)


def test_the_reader_reads_non_finite_voxels_as_background_only_when_asked(tmp_path):
    data = _head()
    path = _save(str(tmp_path / "nan.nii.gz"), _with_nan_outside(data))
    with pytest.raises(UserError, match=r"nan\.nii\.gz: volume holds \d+ NaN or infinite"):
        nifti.read_volume(path)
    volume = nifti.read_volume(path, non_finite="background")
    np.testing.assert_array_equal(volume.data, data)
    assert volume.non_finite == int((data == 0).sum())
    note = nifti.non_finite_note(volume, path)
    assert note.startswith(f"note: {path}: {volume.non_finite} of {data.size} voxels")
    all_nan = _save(str(tmp_path / "all_nan.nii"), np.full(SHAPE, np.nan, np.float32))
    with pytest.raises(UserError, match="all zeros and NaN/inf"):
        nifti.read_volume(all_nan, non_finite="background")
    # The mask never counts a non-finite voxel as brain, whoever reads the array.
    mask = preprocessing.brain_mask([_with_nan_outside(data), np.zeros(SHAPE, np.int16)])
    np.testing.assert_array_equal(mask, data != 0)


# translate ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_translate_refuses_other_kinds_one_line_nothing_written(kind, tmp_path):
    make, words = REFUSED[kind]
    path = make(str(tmp_path), f"{kind}_t2")
    out = tmp_path / "out"
    before = _tree(tmp_path)
    # The input is read before the model is loaded: no model is needed to refuse it.
    argv = ["--model", tmp_path, "--input", path, "--source", "t2", "--out-dir", out]
    if kind == "cifti2":  # the kind that used to crash: the real command line, end to end
        result = run_cli("dygan_tf.translate", *argv)
    else:
        result = run_in_process(translate_command.main, *argv)
    line = one_error_line(result)
    assert path in line and words in line, line
    assert _tree(tmp_path) == before and not out.exists()


def _translate(run_dir, path, out):
    result = run_in_process(
        translate_command.main, "--model", run_dir, "--input", path, "--out-dir", out, "--quiet"
    )
    assert result.returncode == 0, result.stderr
    return result


def test_translate_nifti2_and_nan_outside_the_field_of_view(run_dir, tmp_path):
    data = _head()
    plain = _save(str(tmp_path / "plain" / "X_t2.nii.gz"), data)
    nifti2 = _save(str(tmp_path / "nifti2" / "X_t2.nii"), data, nib.Nifti2Image)
    nan = _save(str(tmp_path / "nan" / "X_t2.nii.gz"), _with_nan_outside(data))
    results = {
        name: _translate(run_dir, path, tmp_path / f"{name}_out")
        for name, path in (("plain", plain), ("nifti2", nifti2), ("nan", nan))
    }
    assert not results["plain"].stderr.strip() and not results["nifti2"].stderr.strip()
    notes = [line for line in results["nan"].stderr.splitlines() if line.startswith("note:")]
    count = int((data == 0).sum())
    assert len(notes) == 1 and notes[0].startswith(f"note: {nan}: {count} of {data.size}"), notes
    assert "outputs hold 0 there" in notes[0]
    expected = {}
    for name in ("plain", "nifti2", "nan"):
        written = {
            t: nib.load(tmp_path / f"{name}_out" / f"X_{t}_synth.nii.gz")
            for t in ("flair", "t1", "t1ce")
        }
        for target, image in written.items():
            out = np.asanyarray(image.dataobj)
            assert out.shape == SHAPE and np.isfinite(out).all()
            assert not out[data == 0].any()  # background, NaN or not, holds 0
            np.testing.assert_array_equal(image.affine, AFFINE)
            if name == "plain":
                expected[target] = out
            else:  # the same volume as NIfTI-2, or with NaN outside: the same output
                np.testing.assert_array_equal(out, expected[target], f"{name} {target}")
        if name == "nifti2":
            assert all(type(image) is nib.Nifti2Image for image in written.values())


# evaluate_volumes --------------------------------------------------------------------


def _truth_root(root, nan=False):
    """One flat-layout case `Case_1` of four modalities and a seg."""
    folder = os.path.join(root, "Case_1")
    for index, modality in enumerate(MODALITIES):
        data = _head(seed=index)
        _save(
            os.path.join(folder, f"Case_1_{modality}.nii.gz"),
            _with_nan_outside(data) if nan and modality == "t2" else data,
        )
    seg = np.zeros(SHAPE, np.uint8)
    seg[8:12, 10:14, 4:7] = 1
    _save(os.path.join(folder, "Case_1_seg.nii.gz"), seg)
    return root


def _evaluate(pred, truth, out):
    return run_in_process(
        evaluate_volumes_command.main, "--pred", pred, "--truth", truth, "--out", out, "--quiet"
    )


def test_evaluate_volumes_reads_nan_as_background_with_a_note(tmp_path):
    prediction = _head(seed=7)
    prediction[_head(seed=3) == 0] = 0
    scores = {}
    for name, nan in (("finite", False), ("nan", True)):
        truth = _truth_root(str(tmp_path / f"truth_{name}"), nan)
        pred = tmp_path / f"pred_{name}"
        stored = _with_nan_outside(prediction) if nan else prediction
        pred_path = _save(str(pred / "Case_1_t2_synth.nii.gz"), stored)
        result = _evaluate(pred, truth, tmp_path / f"out_{name}")
        assert result.returncode == 0, result.stderr
        notes = [line for line in result.stderr.splitlines() if line.strip()]
        if nan:
            t2 = os.path.join(truth, "Case_1", "Case_1_t2.nii.gz")
            assert len(notes) == 2, notes
            assert notes[0].startswith(f"note: {t2}: ") and "read as background (0)" in notes[0]
            assert notes[1].startswith(f"note: {pred_path}: ")
        else:
            assert notes == []
        scores[name] = (tmp_path / f"out_{name}" / "per_case.csv").read_text()
    # NaN outside the head scores exactly as 0 there (the file names aside).
    finite, nan = (text.replace(f"pred_{n}", "pred").splitlines() for n, text in scores.items())
    assert finite == nan


@pytest.mark.parametrize("kind", ["cifti2", "cifti2_gz", "series", "five_d", "junk"])
def test_evaluate_volumes_refuses_other_kinds_one_line(kind, tmp_path):
    truth = _truth_root(str(tmp_path / "truth"))
    make, words = REFUSED[kind]
    os.makedirs(tmp_path / "pred")
    path = make(str(tmp_path / "pred"), "Case_1_flair_synth")
    out = tmp_path / "out"
    line = one_error_line(_evaluate(tmp_path / "pred", truth, out))
    assert path in line and words in line, line
    assert not out.exists()


# the shard builder -------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["nan", "cifti2", "series"])
def test_the_shard_builder_refuses_nan_and_other_kinds(kind, tmp_path):
    root = _truth_root(str(tmp_path / "root"))
    t1 = os.path.join(root, "Case_1", "Case_1_t1.nii.gz")
    os.remove(t1)
    if kind == "nan":
        path = _save(t1, _with_nan_outside(_head()))
        words = "NaN or infinite"
    else:
        make, words = REFUSED[kind]
        path = make(os.path.dirname(t1), "Case_1_t1")
        if kind == "cifti2":  # the builder looks for <case>_t1.nii[.gz]
            os.rename(path, t1.removesuffix(".gz"))
            path = t1.removesuffix(".gz")
    out = tmp_path / "out"
    argv = ["--brats-root", root, "--out", out, "--train-hgg", 1, "--train-lgg", 0]
    line = one_error_line(run_in_process(build_tfrecords.main, *argv, "--workers", 1))
    assert "Case_1" in line and path in line and words in line, line
    assert not out.exists()
