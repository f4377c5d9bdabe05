"""The run folder's checkpoints: one format, `ckpt-N.npz`, written on every backend.

`checkpoints/last` keeps the two newest epochs (a resume falls back to the older one if
the newest is unreadable), `checkpoints/best` the epoch of the best validation PSNR.
A file holds every variable of the named objects (the generator, the discriminator and
both optimizers: their slots, step counts and, with `--ema`, the weights' average) and
the epoch counter, stored exactly (float32 stays float32), so a resumed run continues
bit for bit on any backend. It is written under a temporary name and renamed, so a kill
or a full disk leaves the previous checkpoints whole; numpy's zip format checks every
array's CRC when it is read (`problem`), so a damaged file is passed over, never loaded.

Keras's own weight files (`.weights.h5`) were the first choice: they do carry both
optimizers and the EMA average, but not the epoch, and HDF5 keeps no checksum of the
arrays, so a flipped bit would load silently.

Run folders of earlier releases trained on TensorFlow hold `tf.train.Checkpoint`s
(`ckpt-N.index`, `ckpt-N.data-*` and the `checkpoint` index file). They are still
restored on TensorFlow (`_restore_tensorflow`); the next checkpoint is an `.npz`, and
the old files go as newer checkpoints replace them.
"""

import json
import os
import re
import sys
import zipfile

import numpy as np

from dygan_tf.run_folder.files import HISTORY
from dygan_tf.run_folder.folder import open_run_folder
from dygan_tf.utils.atomic import atomic_path, write_error
from dygan_tf.utils.errors import UserError

NAME = "ckpt"  # ckpt-<epoch>.npz (and an earlier release's ckpt-<epoch>.index, .data-*)
SUFFIX = ".npz"
KEEP_LAST = 2  # the newest checkpoint in checkpoints/last and one to fall back on
TENSORFLOW_INDEX = "checkpoint"  # tf.train.CheckpointManager's list, in earlier releases
_LAYOUT = "__layout__"
# What reading a damaged or truncated .npz raises (numpy's zip checks each array's CRC).
DAMAGE = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)
_EPOCH = "__epoch__"
_TENSORFLOW_FILE = re.compile(rf"{NAME}-(\d+)\.(index|data-\d+-of-\d+)")


class Counter:
    """The epoch counter: `assign(value)` and `numpy()`, as a `tf.Variable` has."""

    def __init__(self, value=0):
        self.value = int(value)

    def assign(self, value):
        self.value = int(value)

    def numpy(self):
        return np.int64(self.value)


class Checkpoint:
    """The variables of named Keras objects (each with `.variables`) and an epoch."""

    def __init__(self, **objects):
        self.epoch = Counter()
        self.objects = objects

    def _variables(self):
        for name, obj in self.objects.items():
            for i, variable in enumerate(obj.variables):
                yield f"{name}/{i}", variable

    def write(self, prefix):
        """Writes `prefix`.npz atomically; returns `prefix`. A failed write (a full
        disk) is one `WriteError` line naming the checkpoint; nothing is left of it."""
        arrays, layout = {}, []
        for key, variable in self._variables():
            arrays[key] = np.asarray(variable.numpy())
            layout.append([key, variable.path, list(arrays[key].shape)])
        arrays[_EPOCH] = np.int64(self.epoch.value)
        arrays[_LAYOUT] = np.asarray(json.dumps(layout))
        try:
            with atomic_path(prefix + SUFFIX) as temporary, open(temporary, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
        except OSError as e:  # atomic_path's WriteError, said of the checkpoint
            raise write_error(
                prefix,
                e,
                f"{os.path.dirname(prefix)} keeps its previous checkpoint; free some space "
                "and run the same command again to resume",
            ) from None
        return prefix

    def restore(self, prefix):
        """Assigns every variable and the epoch from the checkpoint at `prefix`. Every
        array is read (its CRC checked) before anything is assigned: a damaged file
        raises one of `DAMAGE`, a file of another model one UserError line."""
        if not os.path.exists(prefix + SUFFIX):
            return _restore_tensorflow(self, prefix)
        layout, values, epoch = _load(prefix)
        expected = [[k, list(v.shape)] for k, v in self._variables()]
        if [[k, list(s)] for k, _, s in layout] != expected:
            raise UserError(
                f"{prefix + SUFFIX}: holds the weights of another model ({len(layout)} "
                f"arrays, this model has {len(expected)}); train into a new run folder"
            )
        for key, variable in self._variables():
            variable.assign(values[key])
        self.epoch.assign(epoch)
        return self


def _restore_tensorflow(checkpoint, prefix):
    """Restores an earlier release's `tf.train.Checkpoint` at `prefix` (TensorFlow only:
    its variables are found through TensorFlow's object graph)."""
    from dygan_tf.utils import backend

    if not backend.is_tensorflow():
        raise UserError(
            f"{prefix}: a TensorFlow checkpoint of an earlier release; resume this run "
            "once with KERAS_BACKEND=tensorflow, which writes its next checkpoint in the "
            "format every backend reads"
        )
    import tensorflow as tf

    epoch = tf.Variable(0, dtype=tf.int64)
    tf.train.Checkpoint(**checkpoint.objects, epoch=epoch).restore(
        prefix
    ).assert_existing_objects_matched()
    checkpoint.epoch.assign(int(epoch.numpy()))
    return checkpoint


class CheckpointManager:
    """Saves `ckpt-N.npz` into `directory`, keeping the newest `max_to_keep` (an earlier
    release's TensorFlow checkpoints among them: they go as newer ones replace them)."""

    def __init__(self, checkpoint, directory, max_to_keep):
        self.checkpoint, self.directory, self.max_to_keep = checkpoint, directory, max_to_keep

    def save(self, checkpoint_number):
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise write_error(self.directory, e) from None
        prefix = self.checkpoint.write(os.path.join(self.directory, f"{NAME}-{checkpoint_number}"))
        _remove(prefix, keep_npz=True)  # an earlier release's checkpoint of this epoch
        found = checkpoints_in(self.directory)
        for number in sorted(found)[: max(0, len(found) - self.max_to_keep)]:
            _remove(found[number])
        if not any(_TENSORFLOW_FILE.fullmatch(n) for n in os.listdir(self.directory)):
            _remove_file(os.path.join(self.directory, TENSORFLOW_INDEX))
        return prefix

    @property
    def latest_checkpoint(self):
        return latest(self.directory)


def _remove_file(file):
    try:
        os.remove(file)
    except FileNotFoundError:
        pass


def _remove(prefix, keep_npz=False):
    """Deletes the checkpoint at `prefix`, in either format (`keep_npz`: only its
    TensorFlow files)."""
    directory, base = os.path.split(prefix)
    for name in os.listdir(directory):
        if (name == base + SUFFIX and not keep_npz) or (
            _TENSORFLOW_FILE.fullmatch(name) and name.split(".")[0] == base
        ):
            _remove_file(os.path.join(directory, name))


def checkpoints_in(directory):
    """{epoch number: checkpoint prefix} of the checkpoints in `directory`, read from the
    file names (an earlier release's `checkpoint` index file may be the broken part)."""
    found = {}
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            m = re.fullmatch(rf"{NAME}-(\d+)\.npz", name) or _TENSORFLOW_FILE.fullmatch(name)
            if m:
                found[int(m.group(1))] = os.path.join(directory, f"{NAME}-{m.group(1)}")
    return found


def latest(directory):
    """The prefix of the newest checkpoint in `directory`, or None."""
    found = checkpoints_in(directory)
    return found[max(found)] if found else None


def is_tensorflow(prefix):
    """Whether the checkpoint at `prefix` is an earlier release's TensorFlow one."""
    return not os.path.exists(prefix + SUFFIX)


def _load(prefix):
    """(layout, {key: array}, epoch) of `prefix`.npz, every array read in full, so
    numpy's zip checks its CRC: a damaged file raises one of DAMAGE."""
    with np.load(prefix + SUFFIX, allow_pickle=False) as data:
        layout = json.loads(str(data[_LAYOUT]))
        values = {key: data[key] for key, _, _ in layout}
        epoch = int(data[_EPOCH])
    return layout, values, epoch


def _damage_line(error):
    return f"{type(error).__name__}: {str(error)[:120]}"


def read(prefix):
    """The `.npz` checkpoint at `prefix` as {"epoch": N, object name: {variable path:
    array}}: for inspecting a checkpoint without building the model."""
    layout, values, epoch = _load(prefix)
    found = {"epoch": epoch}
    for key, variable_path, _ in layout:
        found.setdefault(key.split("/")[0], {})[variable_path] = values[key]
    return found


def problem(prefix):
    """Why the checkpoint at `prefix` cannot be restored, or None. Every array is read,
    so a checksum mismatch or a truncation is found before anything is restored."""
    if is_tensorflow(prefix):
        return _tensorflow_problem(prefix)
    try:
        _load(prefix)
    except DAMAGE as e:
        return _damage_line(e)
    return None


def _tensorflow_problem(prefix):
    import tensorflow as tf

    try:
        reader = tf.train.load_checkpoint(prefix)
        for name in reader.get_variable_to_shape_map():
            reader.get_tensor(name)
    except (tf.errors.OpError, IndexError, ValueError, RuntimeError) as e:
        text = (getattr(e, "message", None) or str(e)).strip()
        text = re.sub(r"^\{\{[^}]*\}\}\s*", "", text.splitlines()[0] if text else "")
        text = text.replace(prefix, os.path.basename(prefix))
        return f"{type(e).__name__}: {text[:120]}" if text else type(e).__name__
    return None


def _restored_or_why(checkpoint, prefix):
    """Restores `prefix` into `checkpoint` and returns None, or returns why it cannot
    be restored (nothing assigned). An `.npz` is read once; a TensorFlow checkpoint is
    read through first, as TensorFlow's restore assigns as it reads."""
    if is_tensorflow(prefix):
        why = _tensorflow_problem(prefix)
        if why is None:
            checkpoint.restore(prefix)
        return why
    try:
        checkpoint.restore(prefix)
    except UserError:  # another model's checkpoint: not damage, the run stops
        raise
    except DAMAGE as e:
        return _damage_line(e)
    return None


def restore_last(checkpoint, folder, history):
    """Restores the newest readable checkpoint of `folder`/checkpoints/last (a
    `RunFolder`, or its path) into `checkpoint`; returns its prefix, or None for a fresh
    start.

    A newer unreadable checkpoint is passed over with one `note:` line on stderr (the
    caller drops the history rows past the restored epoch). With nothing restorable a
    run starts over (with a note) only if history.csv records at most epoch 1 (a kill
    before its first checkpoint was complete) or nothing at all with no checkpoint
    files either; otherwise one UserError names the folder: a run never silently
    restarts on top of its history.
    """
    folder = open_run_folder(folder)
    directory = folder.checkpoint_dir()
    found = checkpoints_in(directory)
    bad = []
    for number in sorted(found, reverse=True):
        why = _restored_or_why(checkpoint, found[number])
        if why is None:
            if bad:
                print(
                    f"note: {directory}: passing over unreadable "
                    + "; ".join(f"{os.path.basename(p)} ({w})" for p, w in bad)
                    + f"; resuming from {os.path.basename(found[number])}",
                    file=sys.stderr,
                    flush=True,
                )
            return found[number]
        bad.append((found[number], why))
    finished = max((int(r["epoch"]) for r in history), default=0)
    if finished > 1 or (bad and finished == 0):
        why = "; ".join(f"{os.path.basename(p)}: {w}" for p, w in bad) or "none found"
        recorded = (
            f"{folder.file(HISTORY)} records {finished} finished epoch(s)"
            if finished
            else "its checkpoint files are all unreadable"
        )
        raise UserError(
            f"{directory}: no restorable checkpoint ({why}), but {recorded}; restore the "
            "checkpoint files, or train into a new run folder"
        )
    if bad or finished:
        print(
            f"note: {folder}: epoch 1 has no restorable checkpoint; starting over",
            file=sys.stderr,
            flush=True,
        )
    return None
