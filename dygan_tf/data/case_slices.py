"""One BraTS case -> its chosen axial slices, normalised and resized (a build worker).

`prepare_case` runs in the shard builder's worker processes: numpy, nibabel and scipy
only, never TensorFlow. `dygan-build-tfrecords` serialises what it returns.
"""

import multiprocessing

import numpy as np

from dygan_tf.config.tasks import MODALITIES
from dygan_tf.data import nifti, preprocessing
from dygan_tf.data.cases import check_case
from dygan_tf.utils.errors import UserError


def prepare_case(case, image_size, slice_range, per_volume, context=0):
    """Loads, checks and preprocesses one case into its chosen slices: the `per_volume`
    of `slice_range` (start, stop) with the most brain, or, for `slice_range`
    `preprocessing.ALL_SLICES`, every slice that holds brain. With `context` K > 0 each
    modality's images are (slices, 2K + 1, H, W): every chosen slice with its K axial
    neighbours on each side (`preprocessing.context_planes`).

    Runs in a worker: numpy/nibabel/scipy only. Raises UserError naming the case and file.
    """
    cid = case["case_id"]
    files = check_case(case)
    raw, volumes = {}, {}
    for key, path in files.items():
        try:
            raw[key], affine, _ = nifti.load_nifti(path, allow_zero=(key == "seg"))
        except UserError as e:
            raise UserError(f"case {cid}: {e}") from None
        volumes[key], _, _ = preprocessing.to_canonical(raw[key], affine)
    # The mask and the percentiles do not depend on orientation: compute them on the
    # contiguous arrays as stored, and only slice the canonical views.
    raw_mask = preprocessing.brain_mask(raw[m] for m in MODALITIES)
    scales = {m: preprocessing.robust_max(raw[m], raw_mask) for m in MODALITIES}
    mask, canonical_affine, _ = preprocessing.to_canonical(raw_mask, affine)
    # 1 mm voxels (check_case refuses others), so this only pads non-square slices.
    grid = preprocessing.axial_grid(canonical_affine, mask.shape)
    indices = _chosen_slices(mask, slice_range, per_volume, f"case {cid}: {files[MODALITIES[0]]}")

    def planes(volume, order, dtype):  # label maps: nearest, rounded (float seg files)
        return np.stack(
            [
                np.rint(
                    grid.to_model(
                        preprocessing.axial_slice(volume, i).astype(np.float32),
                        image_size,
                        order,
                        fill=0.0,
                    )
                ).astype(dtype)
                for i in indices
            ]
        )

    images = {}
    for m in MODALITIES:

        def plane_at(i, m=m):  # axial slice i of modality m, normalised, on the model's grid
            slice_i = preprocessing.normalize(preprocessing.axial_slice(volumes[m], i), scales[m])
            return grid.to_model(slice_i, image_size, 1)

        if context:  # (slices, 2K + 1, H, W): each slice with its neighbours
            images[m] = np.stack(
                [
                    preprocessing.context_planes(plane_at, i, context, mask.shape[2], image_size)
                    for i in indices
                ]
            )
        else:
            images[m] = np.stack([plane_at(i) for i in indices]).astype(np.float32)
    seg = volumes.get("seg")
    return {
        "case_id": cid,
        "grade": case["grade"],
        "slices": indices,
        "robust_max": scales,
        "images": images,
        "has_seg": seg is not None,
        "seg": (
            planes(seg, 0, np.uint8)
            if seg is not None
            else np.zeros((len(indices), image_size, image_size), np.uint8)
        ),
        "brain_mask": planes(mask, 0, np.uint8),
        "volume_shape": list(mask.shape),
    }


def _chosen_slices(mask, slice_range, per_volume, where):
    """The axial indices a case keeps: every brain slice (`slice_range` "all",
    `per_volume` unused), or the `per_volume` of the range with the most brain."""
    if slice_range == preprocessing.ALL_SLICES:
        # load_nifti refuses all-zero volumes, so a case always holds some brain.
        return preprocessing.brain_slices(mask)
    try:
        return preprocessing.select_slices(mask, slice_range, per_volume)
    except ValueError:
        raise UserError(
            f"{where}: {mask.shape[2]} axial slices (canonical RAS); expected "
            f"--source-slices {slice_range[0]}:{slice_range[1]} within them and at least "
            f"--per-volume {per_volume}"
        ) from None


def worker_context():
    """How worker processes start: forked from a fork server that imported numpy,
    nibabel and scipy once, not spawned to import them again each (0.7-1 s of CPU per
    worker on 2 cores). The server is a fresh interpreter, so like spawned workers they
    never inherit TensorFlow from the parent. Spawn where there is no fork server.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([preprocessing.__name__])  # no-op once it runs
    return context


def prepare_job(job):
    """Worker entry: ('ok', result) or ('bad', message) for a UserError."""
    case, options = job
    try:
        return "ok", prepare_case(case, **options)
    except UserError as e:
        return "bad", str(e)
