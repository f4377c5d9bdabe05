"""`RunFolder`: a training run folder opened once by the command that works on it and
handed down, so library code never rebuilds the folder's paths from a string.

It knows where each of the folder's files is (the names live in
`dygan_tf.run_folder.files`, whose helpers it uses) and reads and writes them: the
config, run.json, the history, the checkpoints' folders, the generator, the pix2pix3
description, the evaluation record and the one-writer lock. Python callers may still
pass a folder path: `open_run_folder` makes it a `RunFolder`.
"""

import os

from dygan_tf.run_folder import files


class RunFolder:
    """A training run folder (`dygan_tf.run_folder.files` describes its files).

    Args:
        path: the folder (it need not exist yet: `fit` creates it).
    """

    def __init__(self, path):
        self.path = os.fspath(path)

    def __fspath__(self):
        return self.path

    def __str__(self):
        return self.path

    def __repr__(self):
        return f"RunFolder({self.path!r})"

    def __eq__(self, other):
        return isinstance(other, RunFolder) and other.path == self.path

    def __hash__(self):
        return hash(self.path)

    @property
    def name(self):
        """The folder's own name (as reports show it)."""
        return os.path.basename(os.path.normpath(self.path))

    def file(self, name):
        """The path of one of the folder's files or folders (`files`' names)."""
        return files.path(self.path, name)

    def has(self, name):
        """Whether the file `name` (e.g. `files.RUN_INFO`) is in the folder."""
        return os.path.isfile(self.file(name))

    def checkpoint_dir(self, kind=files.LAST):
        """checkpoints/last (the newest epochs) or checkpoints/best."""
        return files.checkpoint_dir(self.path, kind)

    @property
    def logs(self):
        """The TensorBoard folder."""
        return self.file(files.LOGS)

    def require(self):
        """UserError unless the folder exists (pure Python)."""
        files.require_folder(self.path)

    def lock(self, command=None):
        """The folder's one-writer lock (`dygan_tf.run_folder.lock`), not yet taken."""
        from dygan_tf.run_folder import lock

        return lock.hold(self.path, command)

    # config.json, run.json, history.csv, evaluation.json
    def read_config(self):
        return files.read_config(self.path)

    def write_config(self, config):
        files.write_config(self.path, config)

    def read_info(self):
        return files.read_info(self.path)

    def write_info(self, shards, validation_cases, backend=None):
        return files.write_info(self.path, shards, validation_cases, backend)

    def add_to_info(self, key, entry):
        files.add_to_info(self.path, key, entry)

    def data_dir(self):
        """The shard folder the run trained on (run.json), or None if not recorded."""
        return files.data_dir_of(self.path)

    def read_history(self):
        return files.read_history(self.path)

    def write_history(self, rows):
        files.write_history(self.path, rows)

    def read_evaluation(self):
        return files.read_evaluation(self.path)

    def write_evaluation(self, record):
        files.write_evaluation(self.path, record)

    def prepare(self, config, shards, choose_validation, backend=None):
        """Creates the run (config.json, run.json) or checks it on resume
        (`files.prepare`); returns the validation case ids."""
        return files.prepare(self.path, config, shards, choose_validation, backend)

    # the generator
    def save_generator(self, generator):
        files.save_generator(generator, self.path)

    def load(self):
        """(RunConfig, generator) of a finished run (`files.load_run`)."""
        return files.load_run(self.path)

    # pix2pix3.json
    def read_baseline(self, with_schedule=False):
        """(config, {target: member RunFolder}[, schedule]) of a pix2pix3 run, or None."""
        found = files.read_baseline(self.path, with_schedule)
        if found is None:
            return None
        config, members, *schedule = found
        return (config, {t: RunFolder(p) for t, p in members.items()}, *schedule)

    def write_baseline(self, config, members, schedule="paper"):
        files.write_baseline(self.path, config, members, schedule)

    def member(self, folder):
        """A pix2pix3 member's run folder, by its name inside this one."""
        return RunFolder(self.file(folder))

    def record_holder(self):
        """The folder whose run.json records the data: this one, or a pix2pix3 run's
        first member."""
        baseline = self.read_baseline()
        return next(iter(baseline[1].values())) if baseline else self


def open_run_folder(run):
    """`run` as a `RunFolder`: itself if it is one, else its path wrapped."""
    return run if isinstance(run, RunFolder) else RunFolder(run)
