"""Whole-volume synthesis: a loaded model (SavedModel or run folder) and the per-volume
pipeline around it, written with the shard builder's own preprocessing functions.

`load_synthesizer(path)` -> `Synthesizer`; `synthesize_case({modality: data}, affine,
targets, synthesizer, source)` -> `{target: volume}` in the input's voxel order and shape.
"""

import logging
import os

import numpy as np

from dygan_tf.config.conditions import FILL_VALUE, SOURCE_PREFERENCE, condition_code, trained_rows
from dygan_tf.config.run_config import RunConfig
from dygan_tf.config.tasks import MODALITIES, task_code
from dygan_tf.data import preprocessing
from dygan_tf.inference import tta
from dygan_tf.inference.model_card import model_card
from dygan_tf.inference.savedmodel import (
    INPUT_KEYS,
    METADATA,
    OUTPUT_KEY,
    SIGNATURE,
    image_size,
    latest_version,
)
from dygan_tf.run_folder.files import GENERATOR as RUN_GENERATOR
from dygan_tf.run_folder.folder import RunFolder
from dygan_tf.utils.errors import UserError


class Synthesizer:
    """`synthesizer(images, conditions)` -> synthesised images, all float32 numpy arrays.

    `kind` is "savedmodel" (calls the serving signature) or "keras" (the generator of
    a run folder); `inputs` is "single" (1-channel images, 12-bit task codes) or "multi"
    (4-channel images, 8-bit conditions: `dygan_tf.config.conditions`); `trained_rows` lists
    the row keys it was trained for ("t2->flair", "t1+t2->flair"), or None if unknown;
    `config` is the run's RunConfig, or None if unknown. `tta` is the test-time
    augmentation its outputs have (`dygan_tf.inference.tta`); `applies_tta` whether this object
    adds it (not when an exported signature already averages).
    """

    def __init__(
        self,
        call,
        image_size,
        kind,
        path,
        inputs="single",
        trained_rows=None,
        config=None,
        tta_mode="none",
        apply_tta=False,
    ):
        self._call = call
        self.model_card = None  # `dygan_tf.inference.model_card`'s dict, where known
        self.image_size = image_size
        self.kind = kind
        self.path = path
        self.inputs = inputs
        self.trained_rows = trained_rows
        self.config = config
        self.tta = tta.check_mode(tta_mode)
        self.applies_tta = apply_tta and tta_mode != "none"
        self._predict = tta.with_tta(self._once, tta_mode if apply_tta else "none")

    def _once(self, images, tasks):
        import tensorflow as tf

        out = self._call(tf.constant(images, tf.float32), tf.constant(tasks, tf.float32))
        return np.asarray(out, dtype=np.float32)

    def __call__(self, images, tasks):
        return self._predict(images, tasks)


def check_savedmodel(path):
    """UserError unless `path` holds an exported SavedModel (pure Python: `evaluate
    --model` checks it before TensorFlow starts)."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise UserError(f"{path}: no saved_model.pb; expected an exported SavedModel")


def _savedmodel_dir(path):
    """`path` itself, or the highest integer version inside a TF Serving base path."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    latest = latest_version(path)  # (number, folder) or None
    return latest[1] if latest else None


def load_synthesizer(path, tta_mode="none", allow_changed_data=False):
    """A Synthesizer from a SavedModel folder (or TF Serving base path) or a run folder,
    its outputs test-time augmented as `tta_mode` says (an export made with `--tta
    flip` already is, whatever `tta_mode` says: its metadata.json records it).

    UserError naming the folder if it is neither, or its signature is not the export's;
    `data_record.ChangedData` for a run folder whose shards changed since it trained
    (its model card would describe other data), unless `allow_changed_data`."""
    tta.check_mode(tta_mode)
    if not os.path.isdir(path):
        raise UserError(
            f"{path}: not a folder; expected a SavedModel folder or a training run folder"
        )
    saved = _savedmodel_dir(path)
    if saved is not None:
        return load_savedmodel_synthesizer(saved, tta_mode)
    if not os.path.isfile(os.path.join(path, RUN_GENERATOR)):
        raise UserError(
            f"{path}: holds neither saved_model.pb nor "
            f"{RUN_GENERATOR}; expected a SavedModel or a training run folder"
        )
    return load_run_synthesizer(path, tta_mode, allow_changed_data)


def load_run_synthesizer(path, tta_mode="none", allow_changed_data=False):
    """The Synthesizer ("keras") of a training run folder's generator; its shards, if
    still there, checked to be those it trained on (`data_record.check`)."""
    import tensorflow as tf

    from dygan_tf.data.manifest import has_manifest
    from dygan_tf.run_folder import data_record

    run = RunFolder(path)
    config, generator = run.load()
    data_dir = run.data_dir()
    if data_dir and has_manifest(data_dir):  # gone since: the card says what is known
        data_record.check(run, data_dir, allow=allow_changed_data)
    trained = list(trained_rows(config))
    call = _generator_call(tf, generator)
    size = image_size(generator)
    synthesizer = Synthesizer(
        call, size, "keras", path, config.model.inputs, trained, config, tta_mode, True
    )
    synthesizer.model_card = model_card(config, path)
    return synthesizer


def _generator_call(tf, generator):
    """`call(image, task)`: the generator in inference mode, traced once (any batch)."""
    spec = (
        tf.TensorSpec((None, *generator.input["image"].shape[1:]), tf.float32),
        tf.TensorSpec((None, generator.input["task"].shape[1]), tf.float32),
    )
    _quiet_retracing_warning(tf)
    return tf.function(
        lambda image, task: generator({"image": image, "task": task}, training=False),
        input_signature=spec,
    )


def load_savedmodel_synthesizer(saved, tta_mode="none"):
    """The Synthesizer ("savedmodel") of an exported SavedModel folder `saved`, with
    what its metadata.json records (trained rows, config, model card, TTA)."""
    loaded, signature, kind = _load_signature(saved)
    metadata = read_metadata(saved)
    trained = metadata.get("trained_rows", metadata.get("trained_tasks"))
    config = _metadata_config(saved, metadata)
    call = _signature_call(signature, kind, loaded)
    size = int(signature.structured_input_signature[1]["image"].shape[1])
    exported = metadata.get("tta", "none")
    if exported not in tta.TTA_MODES:
        raise UserError(
            f"{os.path.join(saved, METADATA)}: tta {exported!r} is not one of {tta.TTA_MODES}"
        )
    apply = exported == "none"  # else the signature itself averages: not twice
    tta_mode = tta_mode if apply else exported
    synthesizer = Synthesizer(
        call, size, "savedmodel", saved, kind, trained, config, tta_mode, apply
    )
    synthesizer.model_card = metadata.get("model_card")  # None: exported before cards
    return synthesizer


def _load_signature(saved):
    """(the loaded SavedModel, its serving signature, its kind: "single" or "multi");
    UserError unless the signature is one `dygan_tf.export` writes."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(saved)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{saved}: cannot load the SavedModel ({type(e).__name__})") from None
    signature = loaded.signatures.get(SIGNATURE)
    inputs = {} if signature is None else signature.structured_input_signature[1]
    outputs = {} if signature is None else signature.structured_outputs
    kinds = {frozenset(keys): kind for kind, keys in INPUT_KEYS.items()}
    kind = kinds.get(frozenset(inputs))
    if kind is None or OUTPUT_KEY not in outputs:
        expected = " or ".join(str(keys) for keys in INPUT_KEYS.values())
        raise UserError(
            f"{saved}: no {SIGNATURE!r} signature taking {expected} and returning "
            f"{OUTPUT_KEY!r}; found signatures {sorted(loaded.signatures)}; export with "
            "python -m dygan_tf.export"
        )
    return loaded, signature, kind


def _metadata_config(saved, metadata):
    """The RunConfig that metadata.json records, or None."""
    if "config" not in metadata:
        return None
    try:
        return RunConfig.from_dict(metadata["config"])
    except (KeyError, TypeError, ValueError) as e:
        where = os.path.join(saved, METADATA)
        raise UserError(f"{where}: its config is unreadable ({e})") from None


def _signature_call(signature, kind, loaded):
    """`call(image, task)` of a serving signature; a multi-source one takes the 8-value
    condition split into `available` and `target`."""
    if kind == "single":

        def call(image, task):
            return signature(image=image, task=task)[OUTPUT_KEY]
    else:
        half = len(MODALITIES)

        def call(image, task):
            available, target = task[:, :half], task[:, half:]
            return signature(image=image, available=available, target=target)[OUTPUT_KEY]

    call.keepalive = loaded  # the signature's variables live as long as `loaded`
    return call


def read_metadata(saved):
    """metadata.json beside a SavedModel as a dict ({} if absent)."""
    import json

    path = os.path.join(saved, METADATA)
    if not os.path.isfile(path):
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            metadata = json.load(f)
        if not isinstance(metadata, dict):
            raise ValueError("not a JSON object")
        return metadata
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: unreadable ({type(e).__name__}: {e})") from None


def synthesize_volume(data, affine, source, targets, synthesizer, batch_slices=4, progress=None):
    """Synthesises `targets` from one `source` volume (`synthesize_case` with one)."""
    return synthesize_case(
        {source: data}, affine, targets, synthesizer, source, batch_slices, progress
    )


def synthesize_case(
    volumes, affine, targets, synthesizer, source=None, batch_slices=4, progress=None
):
    """Synthesises `targets` from a case's present volumes, in their voxel order and shape.

    A single-source model reads `volumes[source]` alone; a multi-source model reads
    every volume (all of one shape and affine), the missing modalities filled as in
    training (`dygan_tf.config.conditions`). Each volume read is reoriented to canonical RAS,
    normalised as the shards are (robust max of its brain voxels, the brain being the
    non-zero voxels of the volumes read), cut into axial slices exactly as the shards
    are, brought onto the model's grid and back (`preprocessing.SliceGrid`: resampled
    to the training's 1 mm in-plane spacing, padded to a square, resized). The output
    is denormalised with the robust max of the source (multi-source: of the first
    present in `conditions.SOURCE_PREFERENCE`) and set to 0 outside the brain. Slices
    with no brain are not run through the model. `batch_slices` slices share one model
    call (x len(targets) rows). `progress(n)` is called after each batch with the
    slices done.
    Returns `({target: float32 volume}, robust_max)`.
    """
    targets = list(targets)
    multi = synthesizer.inputs == "multi"
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
    size = synthesizer.image_size
    channels = MODALITIES if multi else (source,)
    for start in range(0, len(brain_slices), batch_slices):
        chunk = brain_slices[start : start + batch_slices]
        images = np.stack(
            [
                np.stack(
                    [
                        grid.to_model(preprocessing.axial_slice(normalized[m], k), size, 1)
                        if m in normalized
                        else np.full((size, size), FILL_VALUE, np.float32)
                        for m in channels
                    ],
                    axis=-1,
                )
                for k in chunk
            ]
        )
        # Rows are slice-major: slice 0's targets, then slice 1's, ...
        rows = np.repeat(images, len(targets), axis=0)
        fake = synthesizer(rows, np.tile(codes, (len(chunk), 1)))[..., 0]
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


class _OneTracePerModel(logging.Filter):
    """Drops TensorFlow's "N out of the last M calls ... triggered tf.function retracing"
    warning for `_generator_call`'s function: TensorFlow counts traces per code object,
    and the synthesizer traces once per loaded model by design (its signature has an
    unknown batch), so loading a few models in one process (a notebook, the tests) would
    print it for nothing. Other functions' retracing warnings still show."""

    def filter(self, record):
        message = record.getMessage()
        return not (
            "triggered tf.function retracing" in message
            and f"{_generator_call.__qualname__}.<locals>" in message
        )


def _quiet_retracing_warning(tf):
    logger = tf.get_logger()
    if not any(isinstance(f, _OneTracePerModel) for f in logger.filters):
        logger.addFilter(_OneTracePerModel())
