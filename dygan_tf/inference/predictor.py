"""`Predictor`: a trained generator ready for inference, whatever holds it, and
`load_predictor`, the one loader of a training run folder (pix2pix3 included), a `.keras`
file, an exported SavedModel or a TF Serving base path. Evaluation, translation and the
benchmarks call every model the same way: `predictor(images, conditions)`.
"""

import os

import numpy as np

from dygan_tf.config import conditions
from dygan_tf.config.run_config import RunConfig
from dygan_tf.config.tasks import task_from_index
from dygan_tf.inference import savedmodel, tta
from dygan_tf.inference.model_card import model_card
from dygan_tf.run_folder.files import GENERATOR, load_generator
from dygan_tf.run_folder.folder import RunFolder
from dygan_tf.utils import backend
from dygan_tf.utils.errors import UserError


class Predictor:
    """`predictor(images, conditions)` -> synthesised images, float32 numpy arrays.

    Args:
        call: `call(images, conditions)` -> images: the bare model.
        name: what reports call it ("DyGAN (multi-scale D) [demo]"); its TTA is added.
        kind: "keras" (a generator in this process) or "savedmodel" (a serving signature).
        path: where it was loaded from (a SavedModel: its version folder).
        image_size: the square slice size it takes.
        inputs: "single" (1-channel images, 12-bit task codes) or "multi" (4-channel
            images, 8-bit conditions: `dygan_tf.config.conditions`).
        trained_rows: the row keys it was trained for ("t2->flair", "t1+t2->flair"), in
            the run's order, or None if unknown.
        config: the run's `RunConfig`, or None if unknown.
        model_card: `dygan_tf.inference.model_card`'s dict, or None if unknown, or a
            function that makes it on first use (a run's card reads its files).
        tta_mode: the test-time augmentation its outputs have (`dygan_tf.inference.tta`).
        apply_tta: whether this object adds it (not when an exported signature already
            averages).
        data_dir: the shard folder it trained on, where a run folder records it.
        context: the axial neighbours K a side it reads with each slice (`--context`:
            2K + 1 planes per modality, `dygan_tf.config.conditions`); 0: the slice.
    """

    def __init__(
        self,
        call,
        name,
        kind,
        path,
        image_size,
        inputs="single",
        trained_rows=None,
        config=None,
        model_card=None,
        tta_mode="none",
        apply_tta=True,
        data_dir=None,
        context=0,
    ):
        self.tta = tta.check_mode(tta_mode)
        self.name = name + tta.label(tta_mode)
        self.kind, self.path, self.image_size, self.inputs = kind, path, image_size, inputs
        self.context = context
        self.trained_rows = None if trained_rows is None else tuple(trained_rows)
        self.config, self.data_dir, self._card = config, data_dir, model_card
        self.applies_tta = apply_tta and tta_mode != "none"
        self._predict = tta.with_tta(call, tta_mode if apply_tta else "none")

    @property
    def model_card(self):
        if callable(self._card):
            self._card = self._card()
        return self._card

    def __call__(self, images, conditions):
        images, conditions = np.asarray(images, np.float32), np.asarray(conditions, np.float32)
        return np.asarray(self._predict(images, conditions), np.float32)


def method_name(config, pix2pix3=False):
    """The paper's Table 2 name of a run's method."""
    m = config.model
    if pix2pix3:
        return "3×pix2pix"
    if m.label_mode == "input":
        return "MGAN-style (label at input)"
    if m.dyconv == "none":
        return f"pix2pix generator ({m.discriminator} D)"
    d = "multi-scale D" if m.discriminator == "multiscale" else "PatchGAN D"
    prefix = "Ms_DyGAN" if m.discriminator == "multiscale" else "DyGAN"
    extra = "" if m.dyconv == "up" else f", DyConv {m.dyconv}"
    if m.inputs == "multi":
        extra += ", multi-source"
    elif config.train.source == conditions.SOURCE_ANY:
        extra += ", any source"
    return f"{prefix} ({d}{extra})"


def load_predictor(model, tta_mode="none", allow_changed_data=False, check_shards=True):
    """The `Predictor` of `model`: a training run folder (a `RunFolder` or its path), a
    `.keras` file, a SavedModel folder or a TF Serving base path (its latest version),
    its outputs test-time augmented as `tta_mode` says (an export made with `--tta flip`
    already is, whatever `tta_mode` says: its metadata.json records it).

    UserError naming the path if it is none of these, or a SavedModel's signature is not
    the export's. A run folder's shards, if still there, are checked to be those it
    trained on (its model card would describe other data: `data_record.ChangedData`)
    unless `allow_changed_data`, or `check_shards` is false (evaluation checks the
    shards it scores itself)."""
    tta.check_mode(tta_mode)
    if isinstance(model, RunFolder):
        return _from_run(model, tta_mode, allow_changed_data, check_shards)
    path = os.fspath(model)
    if path.endswith(".keras") and os.path.isfile(path):
        generator = load_generator(path)
        inputs, context = savedmodel.input_kind(generator)
        call, size = backend.inference_function(generator), savedmodel.image_size(generator)
        name = f"generator [{os.path.basename(path)}]"
        return Predictor(
            call, name, "keras", path, size, inputs, tta_mode=tta_mode, context=context
        )
    if not os.path.isdir(path):
        raise UserError(
            f"{path}: not a folder; expected a SavedModel folder, a training run folder or "
            "a generator .keras file"
        )
    saved = path if savedmodel.is_savedmodel(path) else savedmodel.latest_version(path)
    if saved is not None:
        return _from_savedmodel(saved, tta_mode)
    run = RunFolder(path)
    if not run.has(GENERATOR) and run.read_baseline() is None:
        raise UserError(
            f"{path}: holds neither saved_model.pb nor "
            f"{GENERATOR}; expected a SavedModel or a training run folder"
        )
    return _from_run(run, tta_mode, allow_changed_data, check_shards)


def _from_run(run, tta_mode, allow_changed_data, check_shards):
    """The Predictor ("keras") of a run folder: its generator, or a pix2pix3 run's
    members, each answering the rows of its target."""
    from dygan_tf.data.manifest import has_manifest
    from dygan_tf.run_folder import data_record

    run.require()
    baseline = run.read_baseline()
    if baseline is None:
        config, generator = run.load()
        call, holder, name = backend.inference_function(generator), run, method_name(config)
    else:
        config, members = baseline
        holder = next(iter(members.values()))  # its run.json records the data
        call = _by_target({t: backend.inference_function(m.load()[1]) for t, m in members.items()})
        name = method_name(config, pix2pix3=True)
    data_dir = holder.data_dir()
    if check_shards and data_dir and has_manifest(data_dir):  # gone: the card says so
        data_record.check(holder, data_dir, allow=allow_changed_data)
    rows = conditions.trained_rows(config)
    return Predictor(
        call, f"{name} [{run.name}]", "keras", run.path, config.model.image_size,
        config.model.inputs, rows, config, lambda: model_card(config, run.path), tta_mode,
        data_dir=data_dir, context=config.model.context,
    )  # fmt: skip


def _by_target(calls):
    """One call of a pix2pix3 run: each row goes to the member of its task's target."""

    def call(image, task):
        targets = [task_from_index(int(i))[1] for i in np.argmax(task, axis=-1)]
        out = np.zeros((*np.shape(image)[:-1], 1), np.float32)  # one target plane a row
        for target, member in calls.items():
            rows = [i for i, t in enumerate(targets) if t == target]
            if rows:
                out[rows] = member(image[rows], task[rows])
        return out

    return call


def _from_savedmodel(saved, tta_mode):
    """The Predictor ("savedmodel") of a SavedModel folder, with what its metadata.json
    records (trained rows, config, model card, TTA)."""
    call, inputs, size, context = savedmodel.load_signature(saved)
    metadata = savedmodel.read_metadata(saved)
    where = os.path.join(saved, savedmodel.METADATA)
    exported = metadata.get("tta", "none")
    if exported not in tta.TTA_MODES:
        raise UserError(f"{where}: tta {exported!r} is not one of {tta.TTA_MODES}")
    try:
        config = RunConfig.from_dict(metadata["config"]) if "config" in metadata else None
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{where}: its config is unreadable ({e})") from None
    apply = exported == "none"  # else the signature itself averages: not twice
    return Predictor(
        call,
        f"SavedModel [{os.path.basename(os.path.normpath(saved))}]",
        "savedmodel",
        saved,
        size,
        inputs,
        metadata.get("trained_rows", metadata.get("trained_tasks")),
        config,
        metadata.get("model_card"),  # None: exported before cards
        tta_mode if apply else exported,
        apply,
        context=context,
    )
