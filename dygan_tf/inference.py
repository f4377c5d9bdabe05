"""Whole-volume synthesis: a loaded model (SavedModel or run folder) and the per-volume
pipeline around it, written with the shard builder's own preprocessing functions.

`load_synthesizer(path)` -> `Synthesizer`; `synthesize_volume(data, affine, source,
targets, synthesizer)` -> `{target: volume}` in the input's voxel order and shape.
"""

import os

import numpy as np

from dygan_tf import preprocessing
from dygan_tf.errors import UserError
from dygan_tf.export import (
    INPUT_KEYS,
    METADATA,
    OUTPUT_KEY,
    SIGNATURE,
    image_size,
)
from dygan_tf.run_folder import GENERATOR as RUN_GENERATOR
from dygan_tf.run_folder import load_run
from dygan_tf.tasks import task_code


class Synthesizer:
    """`synthesizer(images, tasks)` -> synthesised images, all float32 numpy arrays.

    `kind` is "savedmodel" (calls the serving signature) or "keras" (the generator of
    a run folder); `trained_tasks` lists "source->target" names, or None if unknown.
    """

    def __init__(self, call, image_size, kind, path, trained_tasks=None):
        self._call = call
        self.image_size = image_size
        self.kind = kind
        self.path = path
        self.trained_tasks = trained_tasks

    def __call__(self, images, tasks):
        import tensorflow as tf

        out = self._call(tf.constant(images, tf.float32), tf.constant(tasks, tf.float32))
        return np.asarray(out, dtype=np.float32)


def _savedmodel_dir(path):
    """`path` itself, or the highest integer version inside a TF Serving base path."""
    if os.path.isfile(os.path.join(path, "saved_model.pb")):
        return path
    versions = [
        int(v)
        for v in os.listdir(path)
        if v.isdigit() and os.path.isfile(os.path.join(path, v, "saved_model.pb"))
    ]
    return os.path.join(path, str(max(versions))) if versions else None


def load_synthesizer(path):
    """A Synthesizer from a SavedModel folder (or TF Serving base path) or a run folder.

    UserError naming the folder if it is neither, or its signature is not the export's."""
    if not os.path.isdir(path):
        raise UserError(
            f"{path}: not a folder; expected a SavedModel folder or a training run folder"
        )
    saved = _savedmodel_dir(path)
    if saved is None:
        if not os.path.isfile(os.path.join(path, RUN_GENERATOR)):
            raise UserError(
                f"{path}: holds neither saved_model.pb nor "
                f"{RUN_GENERATOR}; expected a SavedModel or a training run folder"
            )
        import tensorflow as tf

        config, generator = load_run(path)
        trained = [f"{config.train.source}->{t}" for t in config.train.targets]
        spec = (
            tf.TensorSpec((None, *generator.input["image"].shape[1:]), tf.float32),
            tf.TensorSpec((None, generator.input["task"].shape[1]), tf.float32),
        )
        call = tf.function(
            lambda image, task: generator({"image": image, "task": task}, training=False),
            input_signature=spec,
        )
        return Synthesizer(call, image_size(generator), "keras", path, trained)

    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(saved)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{saved}: cannot load the SavedModel ({type(e).__name__})") from None
    signature = loaded.signatures.get(SIGNATURE)
    inputs = {} if signature is None else signature.structured_input_signature[1]
    outputs = {} if signature is None else signature.structured_outputs
    if set(inputs) != set(INPUT_KEYS) or OUTPUT_KEY not in outputs:
        raise UserError(
            f"{saved}: no {SIGNATURE!r} signature taking {INPUT_KEYS} and returning "
            f"{OUTPUT_KEY!r}; found signatures {sorted(loaded.signatures)}; export with "
            "python -m dygan_tf.export"
        )
    trained = None
    metadata_path = os.path.join(saved, METADATA)
    if os.path.isfile(metadata_path):
        import json

        try:
            with open(metadata_path, encoding="utf-8") as f:
                trained = json.load(f).get("trained_tasks")
        except (OSError, ValueError, AttributeError) as e:
            raise UserError(f"{metadata_path}: unreadable ({type(e).__name__}: {e})") from None

    def call(image, task):
        return signature(image=image, task=task)[OUTPUT_KEY]

    call.keepalive = loaded  # the signature's variables live as long as `loaded`
    return Synthesizer(call, int(inputs["image"].shape[1]), "savedmodel", saved, trained)


def synthesize_volume(data, affine, source, targets, synthesizer, batch_slices=4, progress=None):
    """Synthesises `targets` from one `source` volume in its own voxel order and shape.

    The volume is reoriented to canonical RAS, normalised as the shards are (robust max
    of the source's non-zero voxels), cut into axial slices exactly as the shards are,
    brought onto the model's grid and back (`preprocessing.SliceGrid`: resampled to the
    training's 1 mm in-plane spacing, padded to a square, resized), denormalised with
    the source's robust max, and set to 0 where the source is 0 (background). Slices
    with no brain are not run through the model. `batch_slices` slices share one model
    call (x len(targets) rows). `progress(n)` is called after each batch with the slices done.
    Returns `({target: float32 volume}, robust_max)`.
    """
    targets = list(targets)
    codes = np.stack([task_code(source, t) for t in targets])
    canonical, canonical_affine, ornt = preprocessing.to_canonical(data, affine)
    grid = preprocessing.axial_grid(canonical_affine, canonical.shape)
    mask = canonical != 0
    scale = preprocessing.robust_max(canonical, mask)
    normalized = preprocessing.normalize(canonical, scale)
    out = {t: np.zeros(canonical.shape, np.float32) for t in targets}
    brain_slices = [k for k in range(canonical.shape[2]) if mask[:, :, k].any()]
    if progress is not None and len(brain_slices) < canonical.shape[2]:
        progress(canonical.shape[2] - len(brain_slices))  # empty slices are done already
    size = synthesizer.image_size
    for start in range(0, len(brain_slices), batch_slices):
        chunk = brain_slices[start : start + batch_slices]
        planes = [preprocessing.axial_slice(normalized, k) for k in chunk]
        images = np.stack([grid.to_model(p, size, 1) for p in planes])
        # Rows are slice-major: slice 0's targets, then slice 1's, ...
        rows = np.repeat(images[:, :, :, None], len(targets), axis=0)
        fake = synthesizer(rows, np.tile(codes, (len(chunk), 1)))[..., 0]
        for i, k in enumerate(chunk):
            for j, target in enumerate(targets):
                image = grid.from_model(fake[i * len(targets) + j], 1)
                out[target][:, :, k] = preprocessing.axial_plane(image)
        if progress is not None:
            progress(len(chunk))
    volumes = {}
    for target in targets:
        volume = preprocessing.denormalize(out[target], scale)
        volume[~mask] = 0.0
        volumes[target] = preprocessing.from_canonical(volume, ornt).reshape(data.shape)
    return volumes, scale
