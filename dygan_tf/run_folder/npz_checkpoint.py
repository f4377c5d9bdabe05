"""Checkpoints in a backend-neutral format: one `ckpt-N.npz` per saved epoch.

TensorFlow's checkpoints hold TensorFlow variables only; a run trained on JAX or PyTorch
keeps its weights, both optimizers' slots and the epoch counter here instead, with the
interface of `tf.train.Checkpoint`/`CheckpointManager` that the run folder code uses
(`epoch.assign/numpy`, `restore`, `save(checkpoint_number=)`, `directory`). Values are
stored exactly (float32 stays float32), so a resumed run continues bit for bit. Each file
is written under a temporary name and renamed, so a kill leaves the previous ones whole;
numpy's zip format checks every array's CRC when it is read (`problem`).
"""

import json
import os
import re
import zipfile

import numpy as np

from dygan_tf.utils.errors import UserError

SUFFIX = ".npz"
_LAYOUT = "__layout__"
_EPOCH = "__epoch__"


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

    def __init__(self, epoch=None, **objects):
        self.epoch = epoch if epoch is not None else Counter()
        self._objects = objects

    def _variables(self):
        for name, obj in self._objects.items():
            for i, variable in enumerate(obj.variables):
                yield f"{name}/{i}", variable

    def write(self, prefix):
        """Writes `prefix`.npz atomically; returns `prefix`."""
        arrays, layout = {}, []
        for key, variable in self._variables():
            arrays[key] = np.asarray(variable.numpy())
            layout.append([key, variable.path, list(arrays[key].shape)])
        arrays[_EPOCH] = np.int64(self.epoch.value)
        arrays[_LAYOUT] = np.asarray(json.dumps(layout))
        temporary = prefix + ".tmp" + SUFFIX
        try:
            with open(temporary, "wb") as f:
                np.savez(f, **arrays)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, prefix + SUFFIX)
        finally:
            if os.path.exists(temporary):
                os.remove(temporary)
        return prefix

    def restore(self, prefix):
        """Assigns every variable from `prefix`.npz; a file of another model is one
        UserError line. Returns self (`assert_existing_objects_matched()` is a no-op:
        the match is checked here, before anything is assigned)."""
        file = prefix + SUFFIX
        with np.load(file, allow_pickle=False) as data:
            expected = [[k, v.path, list(v.shape)] for k, v in self._variables()]
            stored = json.loads(str(data[_LAYOUT]))
            if [[k, tuple(s)] for k, _, s in stored] != [[k, tuple(s)] for k, _, s in expected]:
                raise UserError(
                    f"{file}: holds the weights of another model ({len(stored)} arrays, "
                    f"this model has {len(expected)}); train into a new run folder"
                )
            values = {key: data[key] for key, _, _ in stored}
            epoch = int(data[_EPOCH])
        for key, variable in self._variables():
            variable.assign(values[key])
        self.epoch.assign(epoch)
        return self

    def assert_existing_objects_matched(self):
        return self


class CheckpointManager:
    """Saves `ckpt-N.npz` into `directory`, keeping the newest `max_to_keep`."""

    def __init__(self, checkpoint, directory, max_to_keep):
        self.checkpoint, self.directory, self.max_to_keep = checkpoint, directory, max_to_keep

    def save(self, checkpoint_number):
        os.makedirs(self.directory, exist_ok=True)
        prefix = self.checkpoint.write(os.path.join(self.directory, f"ckpt-{checkpoint_number}"))
        numbers = sorted(checkpoints_in(self.directory))
        for number in numbers[: max(0, len(numbers) - self.max_to_keep)]:
            os.remove(os.path.join(self.directory, f"ckpt-{number}{SUFFIX}"))
        return prefix

    @property
    def latest_checkpoint(self):
        found = checkpoints_in(self.directory)
        return found[max(found)] if found else None


def checkpoints_in(directory):
    """{epoch number: prefix} of the `ckpt-N.npz` files in `directory`."""
    found = {}
    if os.path.isdir(directory):
        for name in os.listdir(directory):
            m = re.fullmatch(r"ckpt-(\d+)\.npz", name)
            if m:
                found[int(m.group(1))] = os.path.join(directory, f"ckpt-{m.group(1)}")
    return found


def problem(prefix):
    """Why `prefix`.npz cannot be restored (every array is read, CRCs checked), or None."""
    try:
        with np.load(prefix + SUFFIX, allow_pickle=False) as data:
            for key in data.files:
                data[key]
            json.loads(str(data[_LAYOUT]))
            int(data[_EPOCH])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        return f"{type(e).__name__}: {str(e)[:120]}"
    return None
