"""Exports a trained generator as a TF Serving SavedModel, with metadata.json beside it.

The library behind `python -m dygan_tf.export` (its usage and flags are in that
command's module and in docs/reference/cli.md).
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from dygan_tf.config import conditions
from dygan_tf.config.tasks import MODALITIES, NUM_TASKS, TASK_CODES
from dygan_tf.data import preprocessing
from dygan_tf.inference import tta
from dygan_tf.inference.model_card import card_markdown, model_card
from dygan_tf.utils import backend
from dygan_tf.utils.atomic import (
    publish_folder,
    write_error,
    write_json_atomic,
    write_text_atomic,
)
from dygan_tf.utils.errors import UserError, for_flag_of

SIGNATURE = "serving_default"
# The signature's inputs for each kind of model (ModelConfig.inputs).
INPUT_KEYS = {"single": ("image", "task"), "multi": ("image", "available", "target")}
OUTPUT_KEY = "synthesized"
METADATA = "metadata.json"
STAGING_PREFIX = ".partial-export-"  # not an integer: TF Serving never loads it
MODEL_CARD = "README.md"  # beside metadata.json: the model card (inference.model_card)
WEIGHTS_DIGEST = "weights_sha256"  # metadata.json: `weights_digest` of the export


def image_size(generator):
    """The square image size a generator takes."""
    return int(generator.input["image"].shape[1])


def input_kind(generator):
    """(inputs, context) of a generator, read from its input shapes: "single" or
    "multi" by its condition's size, the context K by its image channels."""
    inputs = conditions.inputs_of(int(generator.input["task"].shape[-1]))
    return inputs, conditions.context_of(inputs, int(generator.input["image"].shape[-1]))


def check_target(out_dir):
    """Refuses a version folder that TF Serving would not load or that holds files."""
    out_dir = os.path.abspath(os.fspath(out_dir))
    version = os.path.basename(out_dir)
    if not version.isdigit():
        raise UserError(
            f"{out_dir}: the last folder must be an integer version "
            f"(TF Serving layout saved_models/<name>/<version>), found {version!r}"
        )
    if os.path.exists(out_dir) and (not os.path.isdir(out_dir) or os.listdir(out_dir)):
        raise UserError(
            f"{out_dir}: already exists and is not an empty folder; choose a new version number"
        )
    return out_dir


def build_metadata(config, source_run=None, generator=None, tta_mode="none"):
    """What a client needs to prepare inputs and read outputs, as a JSON-able dict."""
    import keras
    import tensorflow as tf

    import dygan_tf

    size = config.model.image_size if generator is None else image_size(generator)
    context = config.model.context
    image = {"dtype": "float32", "range": [-1.0, 1.0]}
    if context:
        image["planes"] = (
            f"each modality's axial planes k-{context}..k+{context} around slice k, in "
            f"that order (channel i * {2 * context + 1} + {context} + o: plane k + o of "
            f"modality i); {conditions.BEYOND_VOLUME} beyond the volume's ends"
        )
    channels = conditions.image_channels(config.model.inputs, context)
    if config.model.inputs == "single":
        inputs = {
            "image": {**image, "shape": [None, size, size, channels]},
            "task": {
                "dtype": "float32",
                "shape": [None, NUM_TASKS],
                "encoding": "one-hot, see tasks",
            },
        }
    else:
        n = len(MODALITIES)
        inputs = {
            "image": {
                **image,
                "shape": [None, size, size, channels],
                "channels": list(MODALITIES),
                "missing_fill": conditions.FILL_VALUE,
            },
            "available": {
                "dtype": "float32",
                "shape": [None, n],
                "encoding": "1 per available modality, channel order; >= 1, never the target",
            },
            "target": {"dtype": "float32", "shape": [None, n], "encoding": "one-hot"},
        }
    rows = conditions.trained_rows(config)
    metadata = {
        "format": "dygan_tf.generator_savedmodel",
        "signature": SIGNATURE,
        "model_inputs": config.model.inputs,
        "inputs": inputs,
        "outputs": {
            OUTPUT_KEY: {"dtype": "float32", "shape": [None, size, size, 1], "range": [-1.0, 1.0]}
        },
        "image_size": size,
        "context": context,
        "modalities": list(MODALITIES),
        "tasks": {
            f"{s}->{t}": {"code": code, "index": code.index("1")}
            for (s, t), code in TASK_CODES.items()
        },
        "trained_rows": list(rows),
        "tta": tta.check_mode(tta_mode),
        "tta_description": tta.describe(tta_mode),
        "orientation": preprocessing.ORIENTATION,
        "normalization": dict(preprocessing.NORMALIZATION),
        "in_plane": dict(preprocessing.IN_PLANE),
        "denormalization": "(y + 1) / 2 * robust_max of the source volume"
        + (
            "" if config.model.inputs == "single" else " (the first present of t2, t1, flair, t1ce)"
        ),
        "config": config.to_dict(),
        "source_run": None if source_run is None else os.path.abspath(source_run),
        "versions": {
            "dygan_tf": dygan_tf.__version__,
            "keras": keras.__version__,
            "tensorflow": tf.__version__,
        },
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if config.model.inputs == "single":  # the tasks of the paper's Table 1 it was trained for
        metadata["trained_tasks"] = list(rows)
    metadata["model_card"] = model_card(config, source_run)  # written as README.md too
    return metadata


def weights_digest(generator, tta_mode="none"):
    """sha256 of what an export serves: every generator weight (shape, dtype, bytes, in
    the generator's order) and the signature's test-time augmentation."""
    import keras

    digest = hashlib.sha256(f"tta={tta.check_mode(tta_mode)}".encode())
    for weight in generator.weights:
        value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
        digest.update(f"|{value.dtype.str}{value.shape}|".encode())
        digest.update(value.tobytes())
    return digest.hexdigest()


def is_savedmodel(folder):
    """Whether `folder` holds a SavedModel (pure Python)."""
    return os.path.isfile(os.path.join(folder, "saved_model.pb"))


def check_savedmodel(path):
    """UserError unless `path` holds an exported SavedModel (pure Python: `evaluate
    --model` checks it before TensorFlow starts)."""
    if not is_savedmodel(path):
        raise UserError(f"{path}: no saved_model.pb; expected an exported SavedModel")


def latest_version(parent):
    """The folder of the highest integer version in a TF Serving base path that holds a
    SavedModel (the one TF Serving serves), or None."""
    if not os.path.isdir(parent):
        return None
    versions = [
        v for v in os.listdir(parent) if v.isdigit() and is_savedmodel(os.path.join(parent, v))
    ]
    return os.path.join(parent, max(versions, key=int)) if versions else None


def read_metadata(saved):
    """metadata.json beside a SavedModel as a dict ({} if absent)."""
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


def exported_digest(version_dir):
    """The `weights_sha256` a version folder's metadata.json records, or None (no
    metadata, unreadable, or written before exports recorded it: release 0.1.0)."""
    try:
        return read_metadata(version_dir).get(WEIGHTS_DIGEST)
    except UserError:
        return None


def load_signature(saved):
    """`(call, inputs, image size, context)` of the SavedModel folder `saved`:
    `call(image, condition)` runs its serving signature (a multi-source one takes the
    8-value condition split into `available` and `target`), `inputs` is "single" or
    "multi", `context` the axial neighbours K a side its image channels hold. UserError
    unless the signature is one `export_generator` writes."""
    import tensorflow as tf

    try:
        loaded = tf.saved_model.load(saved)
    except (OSError, ValueError, RuntimeError) as e:
        raise UserError(f"{saved}: cannot load the SavedModel ({type(e).__name__})") from None
    signature = loaded.signatures.get(SIGNATURE)
    inputs = {} if signature is None else signature.structured_input_signature[1]
    outputs = {} if signature is None else signature.structured_outputs
    kind = {frozenset(keys): kind for kind, keys in INPUT_KEYS.items()}.get(frozenset(inputs))
    if kind is None or OUTPUT_KEY not in outputs:
        expected = " or ".join(str(keys) for keys in INPUT_KEYS.values())
        raise UserError(
            f"{saved}: no {SIGNATURE!r} signature taking {expected} and returning "
            f"{OUTPUT_KEY!r}; found signatures {sorted(loaded.signatures)}; export with "
            "python -m dygan_tf.export"
        )
    half = len(MODALITIES)

    def call(image, condition):
        image, condition = tf.constant(image, tf.float32), tf.constant(condition, tf.float32)
        if kind == "single":
            return signature(image=image, task=condition)[OUTPUT_KEY].numpy()
        available, target = condition[:, :half], condition[:, half:]
        return signature(image=image, available=available, target=target)[OUTPUT_KEY].numpy()

    call.keepalive = loaded  # the signature's variables live as long as `loaded`
    try:
        context = conditions.context_of(kind, int(inputs["image"].shape[-1]))
    except ValueError:
        raise UserError(
            f"{saved}: its {SIGNATURE!r} image has {inputs['image'].shape[-1]} channels; "
            f"expected {conditions.image_channels(kind)} x (2K + 1); export with "
            "python -m dygan_tf.export"
        ) from None
    return call, kind, int(inputs["image"].shape[1]), context


def export_new_version(generator, parent, metadata=None, tta_mode="none", run_dir=None):
    """Exports `generator` as the next integer version under the TF Serving base path
    `parent`, unless the latest version already serves the same weights (its recorded
    `weights_sha256` equals `weights_digest`): TF Serving would swap to an identical
    model. A latest version without a digest (an export of release 0.1.0) counts as
    different. Returns `(version folder, exported)`; `exported` is False when the
    latest version is kept. On JAX or PyTorch the export runs from `run_dir` (the run
    folder `generator` was saved in) in a TensorFlow process: `export_in_tensorflow`.
    """

    digest = weights_digest(generator, tta_mode)
    latest = latest_version(parent)
    if latest is not None and exported_digest(latest) == digest:
        return os.path.abspath(latest), False
    numbers = [int(v) for v in os.listdir(parent) if v.isdigit()] if os.path.isdir(parent) else []
    out_dir = os.path.join(parent, str(max(numbers, default=0) + 1))
    if not backend.is_tensorflow():
        if run_dir is None:
            raise ValueError("export_new_version on JAX or PyTorch needs the `run_dir`.")
        return export_in_tensorflow(run_dir, out_dir, tta_mode), True
    return export_generator(generator, out_dir, metadata, tta_mode), True


def export_in_tensorflow(run_dir, out_dir, tta_mode="none"):
    """Exports `run_dir`'s generator.keras with `python -m dygan_tf.export` in a process
    whose Keras runs on TensorFlow; returns the absolute `out_dir`.

    For a process training on JAX or PyTorch: a SavedModel is a TensorFlow graph, Keras
    cannot switch backends inside one process, and Keras's JAX export cannot trace the
    per-example DyConv loop over a symbolic batch. The generator.keras file is the same
    on every backend.
    """
    package_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "KERAS_BACKEND": "tensorflow", "PYTHONPATH": path}
    command = [sys.executable, "-m", "dygan_tf.export", "--run", os.fspath(run_dir)]
    command += ["--out", os.fspath(out_dir), "--tta", tta_mode]
    result = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = (result.stderr or result.stdout).strip().splitlines()
        reason = lines[-1].removeprefix("error: ") if lines else f"exit {result.returncode}"
        raise UserError(f"{out_dir}: the TensorFlow export failed ({reason})")
    return os.path.abspath(out_dir)


def export_run(run_dir, out_dir, tta_mode="none", flags=None):
    """What `dygan-export` does: `run_dir`'s generator exported to the version folder
    `out_dir` with its metadata.json and model card, and one line saying so. The target
    is checked before the slow model load; `flags` names the command's flag of each
    parameter (`for_flag_of`) for its errors. Returns the absolute `out_dir`."""
    from dygan_tf.run_folder.files import load_run

    with for_flag_of(flags, "out_dir"):
        out_dir = check_target(out_dir)
    with for_flag_of(flags, "run_dir"):
        config, generator = load_run(run_dir)
    metadata = build_metadata(config, run_dir, generator, tta_mode)
    export_generator(generator, out_dir, metadata, tta_mode)
    keys = ", ".join(INPUT_KEYS[config.model.inputs])
    print(
        f"exported {run_dir} -> {out_dir} (signature {SIGNATURE}: {keys} -> "
        f"{OUTPUT_KEY}; image size {image_size(generator)}" + tta.label(tta_mode, "; ") + ")"
    )
    return out_dir


def export_generator(generator, out_dir, metadata=None, tta_mode="none"):
    """Writes `generator` as a SavedModel to `out_dir` (an integer version folder),
    its signature flip-averaged if `tta_mode` is "flip".

    The archive is written into a hidden staging folder beside `out_dir` and renamed
    into place, so TF Serving (which polls the parent) never sees half an export; a
    failed write (full disk) is one `WriteError` line naming `out_dir`, and leaves the
    parent as it was.
    Returns the absolute path of `out_dir`.
    """
    out_dir = check_target(out_dir)
    archive = _serving_archive(generator, tta_mode)
    _write_and_publish(archive, out_dir, generator, metadata, tta_mode)
    return out_dir


def _serving_archive(generator, tta_mode):
    """A Keras ExportArchive of `generator` with the serving signature: named inputs
    (image and task, or image, available and target for a multi-source model), a
    dynamic batch, the output under OUTPUT_KEY."""
    import keras
    import tensorflow as tf

    image_shape = tuple(generator.input["image"].shape[1:])
    condition = int(generator.input["task"].shape[-1])
    archive = keras.export.ExportArchive()
    archive.track(generator)

    def synthesize(image, task):
        return generator({"image": image, "task": task}, training=False)

    if tta.check_mode(tta_mode) == "flip":
        synthesize = tta.flip_averaged_graph(synthesize)
    # Named TensorSpecs give the signature its input names; the batch stays dynamic.
    if condition == NUM_TASKS:

        def serve(image, task):
            return {OUTPUT_KEY: synthesize(image, task)}

        specs = [("image", image_shape), ("task", (NUM_TASKS,))]
    else:  # multi-source: the condition is [available, target]

        def serve(image, available, target):
            return {OUTPUT_KEY: synthesize(image, tf.concat([available, target], axis=-1))}

        n = len(MODALITIES)
        specs = [("image", image_shape), ("available", (n,)), ("target", (n,))]
    archive.add_endpoint(
        SIGNATURE,
        serve,
        input_signature=[
            tf.TensorSpec((None, *shape), tf.float32, name=name) for name, shape in specs
        ],
    )
    return archive


def _write_and_publish(archive, out_dir, generator, metadata, tta_mode):
    """Writes `archive` (and the metadata and model card) into a hidden staging folder
    beside `out_dir`, then renames it into place; nothing is left of a failed write."""
    import tensorflow as tf

    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = None
    try:
        try:
            staging = tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=parent)
            archive.write_out(os.path.join(staging, "model"), verbose=False)
            if metadata is not None:
                metadata = {**metadata, WEIGHTS_DIGEST: weights_digest(generator, tta_mode)}
                write_json_atomic(os.path.join(staging, "model", METADATA), metadata)
                if metadata.get("model_card"):
                    write_text_atomic(
                        os.path.join(staging, "model", MODEL_CARD),
                        card_markdown(metadata["model_card"]),
                    )
        except (tf.errors.OpError, OSError) as e:  # a full disk: nothing is published
            raise write_error(
                out_dir, e, f"nothing was exported; {parent} holds what it held before"
            ) from None
        check_target(out_dir)  # still free after the (slow) write?
        try:
            publish_folder(os.path.join(staging, "model"), out_dir)
        except OSError as e:
            raise UserError(
                f"{out_dir}: cannot publish the export ({e.strerror or e}); nothing was exported"
            ) from None
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)
