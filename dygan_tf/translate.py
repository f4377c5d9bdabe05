"""Translates whole MR volumes into the missing modalities with a trained DyGAN.

    python -m dygan_tf.translate --model SAVEDMODEL_DIR|RUN_DIR --input FILE.nii[.gz]
        --source t2 [--targets flair,t1,t1ce] --out-dir DIR [--batch 4] [--overwrite]
    python -m dygan_tf.translate --model M --input BRATS_CASE_FOLDER --out-dir DIR

Writes DIR/<case>_<target>_synth.nii.gz with the input's shape, affine and header
(float32 data). A case folder (<ID>_{t1,t1ce,t2,flair}.nii[.gz]) is translated from one
modality it holds into the ones it lacks.
"""

import contextlib
import os
import re
import sys
import time

import numpy as np

from dygan_tf import preprocessing
from dygan_tf.atomic import atomic_path
from dygan_tf.cli import ArgumentParser, run_main
from dygan_tf.errors import UserError, for_flag
from dygan_tf.progress import Progress
from dygan_tf.tasks import MODALITIES, check_modality, targets_for

# Case-folder mode picks its source in this order when --source is absent or missing:
# T2 first because it is the paper's (and the default training run's) source.
SOURCE_PREFERENCE = ("t2", "t1", "flair", "t1ce")
NIFTI_EXTENSIONS = (".nii.gz", ".nii")
OUTPUT_SUFFIX = "_synth.nii.gz"


def _strip_extension(name):
    for ext in NIFTI_EXTENSIONS:
        if name.endswith(ext):
            return name[: -len(ext)]
    return name


def plan_file(path, source, targets):
    """(case, source, targets, {modality: path}) for one NIfTI file."""
    stem = _strip_extension(os.path.basename(path))
    match = re.fullmatch(r"(.+)_(" + "|".join(MODALITIES) + ")", stem)
    if source is None:
        if match is None:
            raise UserError(
                f"--input {path}: cannot tell its modality from the name; "
                f"give --source (one of {', '.join(MODALITIES)})"
            )
        source = match.group(2)
    case = match.group(1) if match and match.group(2) == source else stem
    targets = list(targets or targets_for(source))
    return case, source, targets, {source: path}


def case_modalities(folder):
    """{modality: path} of the `<ID>_<modality>.nii[.gz]` files in a BraTS case folder."""
    cid = os.path.basename(os.path.normpath(folder))
    found = {}
    for modality in MODALITIES:
        for ext in NIFTI_EXTENSIONS:
            path = os.path.join(folder, f"{cid}_{modality}{ext}")
            if os.path.isfile(path):
                found[modality] = path
                break
    return cid, found


def plan_folder(folder, source, targets):
    """(case, source, targets, {modality: path}) for a case folder: missing ones only."""
    cid, found = case_modalities(folder)
    if not found:
        raise UserError(
            f"--input {folder}: no usable modality; expected files named "
            f"{cid}_<modality>.nii.gz with modality one of {', '.join(MODALITIES)}"
        )
    if source is None or source not in found:
        if source is not None:
            print(f"note: {cid}_{source} is not in {folder}; using another source", file=sys.stderr)
        source = next(m for m in SOURCE_PREFERENCE if m in found)
    missing = [m for m in targets_for(source) if m not in found]
    if targets:
        missing = [m for m in missing if m in targets]
    return cid, source, missing, found


def parse_targets(text):
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError("--targets: expected a comma-separated list like flair,t1,t1ce")
    try:
        return [check_modality(t, "target modality") for t in names]
    except ValueError as e:
        raise UserError(f"--targets: {e}") from None


def _same_file(a, b):
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_outputs(out_paths, inputs, overwrite):
    """Refuses to write over an input file, or over any existing file without --overwrite."""
    for path in out_paths:
        for source_path in inputs:
            if _same_file(path, source_path) or os.path.abspath(path) == os.path.abspath(
                source_path
            ):
                raise UserError(
                    f"--out-dir: output {path} is an input file; choose another --out-dir"
                )
        if os.path.exists(path) and not overwrite:
            raise UserError(
                f"--out-dir: {path} already exists; pass --overwrite or choose another --out-dir"
            )


def write_like(path, volume, header):
    """Writes `volume` as NIfTI at `path` with `header`'s geometry, float32, no scaling."""
    import nibabel as nib

    image_class = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
    header = header.copy()
    image = image_class(volume.astype(np.float32).reshape(header.get_data_shape()), None, header)
    image.set_data_dtype(np.float32)
    image.header.set_slope_inter(1.0, 0.0)
    image.header["cal_min"], image.header["cal_max"] = 0.0, 0.0
    # qform and sform (codes included) come from the header, as in the input.
    nib.save(image, path)


def write_outputs(volumes, out_paths, header):
    """Writes every target's volume, all or none: each goes to a temporary name first
    and all are renamed only when every write has succeeded, so a full disk leaves no
    output behind (and a rerun is not refused for outputs that already exist)."""
    with contextlib.ExitStack() as stack:
        for target, path in out_paths.items():
            try:
                tmp = stack.enter_context(atomic_path(path))
                write_like(tmp, volumes[target], header)
            except OSError as e:
                raise UserError(
                    f"{path}: cannot write ({e.strerror or e}); nothing was written"
                ) from None


def translate(
    model,
    input_path,
    out_dir,
    source=None,
    targets=None,
    batch_slices=4,
    overwrite=False,
    verbose=True,
    synthesizer=None,
):
    """Runs one translation; returns {target: written path}. See the module docstring."""
    from dygan_tf.inference import load_synthesizer, synthesize_volume

    if source is not None:
        try:
            check_modality(source, "source modality")
        except ValueError as e:
            raise UserError(f"--source: {e}") from None
    if batch_slices < 1:
        raise UserError(f"--batch: expected a positive number of slices, found {batch_slices}")
    if os.path.isdir(input_path):
        case, source, targets, inputs = plan_folder(input_path, source, targets)
    elif os.path.isfile(input_path):
        case, source, targets, inputs = plan_file(input_path, source, targets)
        if source in targets:
            raise UserError(
                f"--targets: {source} is the source; DyGAN translates into a different modality"
            )
    else:
        raise UserError(f"--input {input_path}: no such file or folder")
    if not targets:
        if verbose:
            print(f"{case}: nothing to synthesise (present: {', '.join(sorted(inputs))})")
        return {}
    out_paths = {t: os.path.join(out_dir, f"{case}_{t}{OUTPUT_SUFFIX}") for t in targets}
    check_outputs(out_paths.values(), inputs.values(), overwrite)
    data, affine, header = preprocessing.load_nifti(inputs[source])
    if synthesizer is None:
        with for_flag("--model"):
            synthesizer = load_synthesizer(model)
    untrained = [
        t
        for t in targets
        if synthesizer.trained_tasks is not None
        and f"{source}->{t}" not in synthesizer.trained_tasks
    ]
    if untrained:
        print(
            f"warning: the model was not trained for {source} -> {', '.join(untrained)} "
            f"(trained: {', '.join(synthesizer.trained_tasks)})",
            file=sys.stderr,
        )

    depth = preprocessing.to_canonical(data, affine)[0].shape[2]
    bar = None
    if verbose:
        print(
            f"{case}: {source} -> {', '.join(targets)} ({depth} axial slices, "
            f"{synthesizer.kind} model {synthesizer.path})"
        )
        bar = Progress(depth, unit="slice")
    start = time.perf_counter()
    volumes, _ = synthesize_volume(
        data,
        affine,
        source,
        targets,
        synthesizer,
        batch_slices,
        progress=None if bar is None else (lambda n: bar.add(n)),
    )
    seconds = time.perf_counter() - start
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"--out-dir {out_dir}: cannot create it ({e.strerror})") from None
    write_outputs(volumes, out_paths, header)
    if verbose:
        print(
            f"{case}: {depth} slices x {len(targets)} targets in {seconds:.1f}s "
            f"({depth / seconds:.1f} slices/s); wrote {', '.join(out_paths.values())}"
        )
    return out_paths


def main(argv=None):
    parser = ArgumentParser(prog="dygan_tf.translate", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        required=True,
        help="SavedModel folder (or TF Serving base path) or training run folder",
    )
    parser.add_argument("--input", required=True, help="a NIfTI volume or a BraTS case folder")
    parser.add_argument(
        "--source",
        help="modality of --input (default for a file: from "
        "its name; for a folder: t2, t1, flair, t1ce, first present)",
    )
    parser.add_argument(
        "--targets",
        help="comma-separated target modalities (default: the "
        "other three; in a folder: the missing ones)",
    )
    parser.add_argument("--out-dir", required=True)
    parser.add_argument(
        "--batch",
        type=int,
        default=4,
        help="axial slices per model call (each expands into one row per target)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace existing outputs (never an input file)"
    )
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    translate(
        args.model,
        args.input,
        args.out_dir,
        args.source,
        parse_targets(args.targets),
        args.batch,
        args.overwrite,
        verbose=not args.quiet,
    )


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run_main(main)
