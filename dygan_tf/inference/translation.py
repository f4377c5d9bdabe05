"""Translates whole MR volumes into the missing modalities with a trained DyGAN:
planning what a file or case folder lacks, the checks, whole-volume synthesis
(`synthesize_case`, written with the shard builder's own preprocessing) and writing.

The library behind `python -m dygan_tf.translate` (its usage and flags are in
docs/reference/cli.md); a root of many cases is `batch_translation`'s.
"""

import contextlib
import dataclasses
import os
import re
import sys
import time

import numpy as np

from dygan_tf.config.conditions import FILL_VALUE, SOURCE_PREFERENCE, condition_code, row_key
from dygan_tf.config.tasks import MODALITIES, check_modality, spelled, targets_for, task_code
from dygan_tf.data import layouts, nifti, preprocessing
from dygan_tf.inference import tta
from dygan_tf.inference.batch_choice import BatchChoice
from dygan_tf.utils.atomic import atomic_path, write_json_atomic
from dygan_tf.utils.errors import UserError
from dygan_tf.utils.progress import Progress

OUTPUT_SUFFIX = "_synth.nii.gz"
UNTRAINED_SUFFIX = ".untrained.json"  # beside an output of a task the model never learned
NON_FINITE_RULE = "read as background (0); the outputs hold 0 there"


def _name_modality(stem):
    """(case, modality) of a file stem `<case>_<modality>` or BraTS 2023's
    `<case>-<t1n|t1c|t2w|t2f>`, or None."""
    for separator, tokens in layouts.NAMINGS.values():
        spelled = {tokens[m]: m for m in MODALITIES}
        pattern = r"(.+)" + re.escape(separator) + "(" + "|".join(spelled) + ")"
        match = re.fullmatch(pattern, stem)
        if match:
            return match.group(1), spelled[match.group(2)]
    return None


def plan_file(path, source, targets):
    """(case, source, targets, {modality: path}) for one NIfTI file."""
    name = os.path.basename(path)
    stem = nifti.nifti_stem(name) or name
    match = _name_modality(stem)
    if source is None:
        if match is None:
            raise UserError(
                f"{path}: cannot tell its modality from the name; "
                f"give --source (one of {', '.join(MODALITIES)})"
            )
        source = match[1]
    case = match[0] if match and match[1] == source else stem
    targets = list(targets or targets_for(source))
    return case, source, targets, {source: path}


def case_modalities(folder):
    """(case id, {modality: path}) of a BraTS case folder's volumes, named as any BraTS
    release names them (`dygan_tf.data.layouts`: `<ID>_flair.nii.gz`, `<ID>-t2f.nii.gz`)."""
    cid = os.path.basename(os.path.normpath(folder))
    _, files = layouts.case_files(folder, cid)
    return cid, {m: files[m] for m in MODALITIES if m in files}


def plan_folder(folder, source, targets, quiet=False):
    """(case, source, targets, {modality: path}) for a case folder: missing ones only.
    A `source` the folder lacks is one `note:` line (none if `quiet`)."""
    cid, found = case_modalities(folder)
    source = None if source is None else check_modality(source, "source modality")
    if not found:
        raise UserError(
            f"{folder}: no usable modality; expected files named "
            f"{layouts.expected_names(cid)} with modality one of {', '.join(MODALITIES)}"
        )
    if source is None or source not in found:
        if source is not None and not quiet:
            naming = layouts.naming_of(next(iter(found.values())))
            print(
                f"note: {layouts.file_name(cid, source, naming, '')} is not in {folder}; "
                "using another source",
                file=sys.stderr,
            )
        source = next(m for m in SOURCE_PREFERENCE if m in found)
    missing = [m for m in targets_for(source) if m not in found]
    if targets:
        missing = [m for m in missing if m in targets]
    return cid, source, missing, found


@dataclasses.dataclass(frozen=True)
class Plan:
    """What one translation reads and writes."""

    case: str
    source: str
    targets: list  # the modalities to synthesise (empty: nothing is missing)
    inputs: dict  # {modality: path} of the files present
    naming: str = "dygan"  # of the outputs: see OUTPUT_NAMINGS

    def spell(self, modalities, joiner=", "):
        """`modalities` as the input files spell them (t2f, t1n, ... for BraTS 2023's)."""
        naming = layouts.naming_of(next(iter(self.inputs.values()))) if self.inputs else None
        return joiner.join(spelled(m, naming) for m in modalities)

    def out_paths(self, out_dir):
        return {
            t: os.path.join(out_dir, output_name(self.case, t, self.naming)) for t in self.targets
        }


# --naming: "dygan" writes <case>_<target>_synth.nii.gz; "brasyn" writes BraSyn's
# submission names, <case>-<t1n|t1c|t2w|t2f>.nii.gz (the missing sequence only).
OUTPUT_NAMINGS = ("dygan", "brasyn")


def output_name(case, target, naming="dygan"):
    """The file name a synthesised `target` of `case` is written under."""
    if naming == "brasyn":
        return layouts.file_name(case, target, "brats2023")
    if naming != "dygan":
        raise ValueError(f"naming must be one of {OUTPUT_NAMINGS}. Received: naming={naming!r}")
    return f"{case}_{target}{OUTPUT_SUFFIX}"


def plan_input(input_path, source=None, targets=None, naming="dygan"):
    """The `Plan` for a NIfTI file or a BraTS case folder (see `translate`)."""
    if source is not None:
        source = check_modality(source, "source modality")
    if os.path.isdir(input_path):
        return Plan(*plan_folder(input_path, source, targets), naming=naming)
    if os.path.isfile(input_path):
        plan = Plan(*plan_file(input_path, source, targets), naming=naming)
        if plan.source in plan.targets:
            raise UserError(
                f"{input_path}: {plan.source} is the source; DyGAN translates into a "
                "different modality"
            )
        return plan
    raise UserError(f"{input_path}: no such file or folder")


def parse_targets(text):
    """["flair", "t1"] from "flair,t1"; None for None."""
    if text is None:
        return None
    names = [t.strip() for t in text.split(",") if t.strip()]
    if not names:
        raise UserError(f"{text!r}: expected a comma-separated list like flair,t1,t1ce")
    return [check_modality(t, "target modality") for t in names]


def is_inside(path, folder):
    """Whether `path` is `folder` or lies under it (links resolved)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def check_naming(input_path, out_dir, naming):
    """Refuses `--naming brasyn` outputs inside the input's folder: named as BraSyn names
    real scans (`<case>-t2f.nii.gz`), a later run would read them as acquired ones."""
    folder = input_path if os.path.isdir(input_path) else os.path.dirname(input_path) or "."
    if naming == "brasyn" and is_inside(out_dir, folder):
        raise UserError(
            f"{out_dir}: inside the input folder {folder}; BraSyn names "
            f"({output_name('<case>', 'flair', naming)}) there would later pass for real "
            "scans; write them to a folder outside the input"
        )


def _same_file(a, b):
    return os.path.exists(a) and os.path.exists(b) and os.path.samefile(a, b)


def check_outputs(out_paths, inputs, overwrite):
    """Refuses to write over an input file, or over any existing file without --overwrite."""
    for path in out_paths:
        for source_path in inputs:
            if _same_file(path, source_path) or os.path.abspath(path) == os.path.abspath(
                source_path
            ):
                raise UserError(f"{path}: this output is an input file; choose another folder")
        if os.path.exists(path) and not overwrite:
            raise UserError(f"{path}: already exists; allow overwriting or choose another folder")


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
    tta_mode="none",
    naming="dygan",
    allow_untrained=False,
):
    """Fills in missing sequences: translates a NIfTI volume or a BraTS case folder.

    Args:
        model: a loaded `Predictor` or what `load_predictor` opens (a SavedModel folder
            or TF Serving base path, a training run folder, a `.keras` file).
        input_path: a NIfTI file (modality from its name `<case>_<modality>.nii.gz`
            unless `source` is given) or a BraTS case folder (only the missing
            modalities are written; the source is `source` if present, else the
            first present of t2, t1, flair, t1ce).
        out_dir: folder for `<case>_<target>_synth.nii.gz`.
        source: the source modality, or None (see `input_path`).
        targets: target modalities, or None (all others / the missing ones).
        batch_slices: axial slices per model call (>= 1), or "auto" (the fastest of
            `batch_choice.CANDIDATES`, timed on the case: `batch_choice.BatchChoice`).
        overwrite: replace existing outputs (an input file never).
        verbose: print progress and a summary line.
        tta_mode: test-time augmentation ("none" or "flip": `dygan_tf.inference.tta`) of
            a model loaded here.
        naming: "dygan" (`<case>_<target>_synth.nii.gz`) or "brasyn" (BraSyn's
            `<case>-<t1n|t1c|t2w|t2f>.nii.gz`).
        allow_untrained: also write targets the model was not trained for from what
            the input holds (marked by a JSON record beside each, `run_plan`); without
            it they are refused, one `refused:` line each, and left out of the result.

    Returns:
        `{target: written path}`; each volume has the input's shape, affine and header.

    Example:

    >>> translate("saved_models/dygan", "BraTS19_X/", "BraTS19_X/")  # doctest: +SKIP
    {'t1ce': 'BraTS19_X/BraTS19_X_t1ce_synth.nii.gz'}
    """
    from dygan_tf.inference.predictor import Predictor, load_predictor

    plan = plan_input(input_path, source, targets, naming)
    check_outputs(plan.out_paths(out_dir).values(), plan.inputs.values(), overwrite)

    def load_model():
        return model if isinstance(model, Predictor) else load_predictor(model, tta_mode)

    return run_plan(plan, out_dir, load_model, batch_slices, verbose, allow_untrained).written


@dataclasses.dataclass(frozen=True)
class CaseOutcome:
    """What `run_plan` did for one case: `written` {target: path}; `refused` {target:
    why} (a task the model was not trained for: nothing written for it); `untrained`
    {target: sidecar path} of outputs written anyway (`allow_untrained`), each marked by
    a JSON record beside it."""

    written: dict
    refused: dict
    untrained: dict


def untrained_message(key, trained, spell=None):
    """Why a task is refused: the task (its modalities spelled by `spell`, as the case's
    files name them) and the tasks the model knows."""
    if spell is not None:
        sources, target = key.split("->")
        key = f"{spell(sources.split('+'), '+')}->{spell([target])}"
    return f"the model was not trained for {key} (it knows {', '.join(trained)})"


def untrained_record_path(out_path):
    """The JSON beside an output written for a task the model was not trained for."""
    stem = nifti.nifti_stem(os.path.basename(out_path)) or os.path.basename(out_path)
    return os.path.join(os.path.dirname(out_path), stem + UNTRAINED_SUFFIX)


def run_plan(
    plan,
    out_dir,
    load_model,
    batch_slices=4,
    verbose=True,
    allow_untrained=False,
    read=None,
):
    """Synthesises `plan.targets` and writes them into `out_dir` (all or none); returns
    a `CaseOutcome`. `load_model()` returns the `Predictor`; it is called
    once the source volume has been read (a bad input is reported first). A
    single-source model reads `plan.source`; a multi-source model every present volume,
    each through `read` (`read_input`'s results: a root's loop reads ahead).
    `batch_slices` is an int, "auto" or a `BatchChoice` shared by a run's cases.

    A target the model was not trained for from the present volumes (its row key is not
    among `predictor.trained_rows`) is refused: nothing is written for it, one
    `refused:` line says why, and the other targets are still written. With
    `allow_untrained` it is written anyway, with a `warning:` line and a JSON record
    beside the output (`untrained_record_path`) saying so."""
    if not isinstance(batch_slices, BatchChoice):
        batch_slices = BatchChoice(batch_slices, verbose)
    read = read or read_input
    case, source, targets, inputs = plan.case, plan.source, plan.targets, plan.inputs
    if not targets:
        if verbose:
            print(f"{case}: nothing to synthesise (present: {plan.spell(sorted(inputs))})")
        return CaseOutcome({}, {}, {})
    data, affine, header = read(inputs[source])
    predictor = load_model()
    volumes = {source: data}
    if predictor.inputs == "multi":
        for m, path in inputs.items():
            if m != source:
                volumes[m] = read_matching(path, inputs[source], data.shape, affine, read)
    available = tuple(m for m in MODALITIES if m in volumes)
    keys = {t: row_key(available, t) for t in targets}
    trained = predictor.trained_rows
    unknown = {t: keys[t] for t in targets if trained is not None and keys[t] not in trained}
    refused = _refused(plan, unknown, trained, allow_untrained)
    targets = [t for t in targets if t not in refused]
    if not targets:
        return CaseOutcome({}, refused, {})
    out_paths = {t: p for t, p in plan.out_paths(out_dir).items() if t in targets}

    depth = preprocessing.to_canonical(data, affine)[0].shape[2]
    bar = None
    if verbose:
        print(
            f"{case}: {plan.spell(available, '+')} -> {plan.spell(targets)} ({depth} axial slices, "
            f"{predictor.kind} model {predictor.path}" + tta.label(predictor.tta) + ")"
        )
        bar = Progress(depth, unit="slice")
    start = time.perf_counter()
    model, per_call = batch_slices.for_case(predictor, len(targets), case)
    synthesized, _ = synthesize_case(
        volumes,
        affine,
        targets,
        model,
        source,
        per_call,
        progress=None if bar is None else (lambda n: bar.add(n)),
    )
    seconds = time.perf_counter() - start
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise UserError(f"{out_dir}: cannot create it ({e.strerror})") from None
    write_outputs(synthesized, out_paths, header)
    untrained = {
        t: _untrained_record(out_paths[t], unknown[t], trained, predictor)
        for t in targets
        if t in unknown
    }
    if verbose:
        print(
            f"{case}: {depth} slices x {len(targets)} targets in {seconds:.1f}s "
            f"({depth / seconds:.1f} slices/s); wrote {', '.join(out_paths.values())}"
        )
    return CaseOutcome(out_paths, refused, untrained)


def _refused(plan, unknown, trained, allow_untrained):
    """{target: why} of the targets `unknown` ({target: row key} the model never
    learned) refused, each with a `refused:` line; with `allow_untrained` none, each
    with a `warning:` line instead."""
    refused = {}
    for target, key in unknown.items():
        why = untrained_message(key, trained, plan.spell)
        named = plan.spell([target])
        if allow_untrained:
            print(f"warning: {plan.case} {named}: written though {why}", file=sys.stderr)
        else:
            refused[target] = why
            print(
                f"refused: {plan.case} {named}: {why}; nothing written for it "
                "(--allow-untrained writes it anyway)",
                file=sys.stderr,
            )
    return refused


def _untrained_record(out_path, key, trained, predictor):
    """Writes the JSON record beside an output written by a task the model never
    learned (`untrained_record_path`); returns its path."""
    path = untrained_record_path(out_path)
    record = {
        "output": os.path.basename(out_path),
        "untrained": True,
        "task": key,
        "trained_rows": list(trained),
        "model": str(predictor.path),
        "why": "written with --allow-untrained: " + untrained_message(key, trained),
    }
    write_json_atomic(path, record)
    return path


def load_input(path):
    """`(data, affine, header, note)` of an input volume, printing nothing: `read_input`
    without its line (a thread reading ahead keeps the line for its turn)."""
    volume = nifti.read_volume(path, non_finite="background")
    note = nifti.non_finite_note(volume, path, NON_FINITE_RULE)
    return volume.data, volume.affine, volume.header, note


def read_input(path, load=load_input):
    """`(data, affine, header)` of an input volume (`load(path)`'s). NaN/inf voxels
    (outside the field of view of a resampled volume) are read as background (0), with
    one `note:` line: the brain mask leaves them out, so the outputs hold 0 there."""
    data, affine, header, note = load(path)
    if note:
        print(note, file=sys.stderr)
    return data, affine, header


def read_matching(path, reference, shape, affine, read=read_input):
    """The data of NIfTI `path` (`read(path)`'s); UserError naming both files unless its
    shape and affine are those of `reference` (a multi-source model reads the volumes
    voxel by voxel)."""
    data, other_affine, _ = read(path)
    if data.shape != shape or not np.allclose(other_affine, affine, atol=1e-4):
        what = "shape" if data.shape != shape else "affine"
        raise UserError(
            f"{path}: its {what} differs from {reference}'s "
            f"({data.shape if what == 'shape' else 'affine'} vs "
            f"{shape if what == 'shape' else 'affine'}); the case's volumes must be "
            "co-registered on one grid"
        )
    return data


def synthesize_case(
    volumes, affine, targets, predictor, source=None, batch_slices=4, progress=None
):
    """Synthesises `targets` from a case's present volumes, in their voxel order and shape.

    A single-source model reads `volumes[source]` alone; a multi-source model reads
    every volume (all of one shape and affine), the missing modalities filled as in
    training (`dygan_tf.config.conditions`). Each volume read is reoriented to canonical RAS,
    normalised as the shards are (robust max of its brain voxels, the brain being the
    non-zero voxels of the volumes read), cut into axial slices exactly as the shards
    are, brought onto the model's grid and back (`preprocessing.SliceGrid`: resampled
    to the training's 1 mm in-plane spacing, padded to a square, resized). A model of
    context K (`predictor.context`) reads each slice with its K axial neighbours a side,
    BEYOND_VOLUME past the volume's ends, as its shards stored them. The output
    is denormalised with the robust max of the source (multi-source: of the first
    present in `conditions.SOURCE_PREFERENCE`) and set to 0 outside the brain. Slices
    with no brain are not run through the model. `batch_slices` slices share one model
    call (x len(targets) rows). `progress(n)` is called after each batch with the
    slices done.
    Returns `({target: float32 volume}, robust_max)`.
    """
    targets = list(targets)
    multi = predictor.inputs == "multi"
    if not multi:
        volumes = {source: volumes[source]}
        codes = np.stack([task_code(source, t) for t in targets])
    else:
        codes = np.stack([condition_code(tuple(volumes), t) for t in targets])
        source = next(m for m in SOURCE_PREFERENCE if m in volumes)
    shape = volumes[source].shape
    canonical, ornt = {}, None
    for m, data in volumes.items():
        canonical[m], canonical_affine, ornt = preprocessing.to_canonical(data, affine)
    grid = preprocessing.axial_grid(canonical_affine, canonical[source].shape)
    mask = np.logical_or.reduce([v != 0 for v in canonical.values()])
    scales = {m: preprocessing.robust_max(v, mask) for m, v in canonical.items()}
    normalized = {m: preprocessing.normalize(v, scales[m]) for m, v in canonical.items()}
    depth = mask.shape[2]
    out = {t: np.zeros(mask.shape, np.float32) for t in targets}
    brain_slices = [k for k in range(depth) if mask[:, :, k].any()]
    if progress is not None and len(brain_slices) < depth:
        progress(depth - len(brain_slices))  # empty slices are done already
    size, context = predictor.image_size, predictor.context
    channels = MODALITIES if multi else (source,)

    def planes(m, k):
        """(2K + 1, size, size): slice k of modality m with its K neighbours a side, on
        the model's grid, as the shards store them; a missing modality filled."""
        if m not in normalized:
            return np.full((2 * context + 1, size, size), FILL_VALUE, np.float32)
        return preprocessing.context_planes(
            lambda i: grid.to_model(preprocessing.axial_slice(normalized[m], i), size, 1),
            k,
            context,
            depth,
            size,
        )

    for start in range(0, len(brain_slices), batch_slices):
        chunk = brain_slices[start : start + batch_slices]
        # (slices, size, size, channels), modality-major (`conditions.context_channels`)
        images = np.stack(
            [np.concatenate([planes(m, k) for m in channels]).transpose(1, 2, 0) for k in chunk]
        )
        # Rows are slice-major: slice 0's targets, then slice 1's, ...
        rows = np.repeat(images, len(targets), axis=0)
        fake = predictor(rows, np.tile(codes, (len(chunk), 1)))[..., 0]
        for i, k in enumerate(chunk):
            for j, target in enumerate(targets):
                image = grid.from_model(fake[i * len(targets) + j], 1)
                out[target][:, :, k] = preprocessing.axial_plane(image)
        if progress is not None:
            progress(len(chunk))
    result = {}
    for target in targets:
        volume = preprocessing.denormalize(out[target], scales[source])
        volume[~mask] = 0.0
        result[target] = preprocessing.from_canonical(volume, ornt).reshape(shape)
    return result, scales[source]
