"""`RunFolder`: a run folder opened once. Its paths are the run-folder module's, its
pix2pix3 members are run folders themselves, and its lock is the one-writer lock."""

import os

import pytest

from dygan_tf.config.run_config import get_preset
from dygan_tf.run_folder import files
from dygan_tf.run_folder.folder import RunFolder, open_run_folder
from dygan_tf.run_folder.lock import FolderInUse
from dygan_tf.utils.errors import UserError


def test_paths_are_the_run_folder_modules(tmp_path):
    run = RunFolder(tmp_path / "run")
    assert open_run_folder(run) is run and open_run_folder(str(run)) == run
    assert os.fspath(run) == str(tmp_path / "run") == str(run) and run.name == "run"
    assert run.file(files.CONFIG) == files.path(str(tmp_path / "run"), files.CONFIG)
    assert run.checkpoint_dir() == files.checkpoint_dir(str(tmp_path / "run"))
    assert run.checkpoint_dir(files.BEST) == os.path.join(run.path, "checkpoints", "best")
    assert run.logs == os.path.join(run.path, files.LOGS)
    with pytest.raises(UserError, match="not a folder"):
        run.require()


def test_config_history_and_pix2pix3_members_round_trip(tmp_path):
    run = RunFolder(tmp_path)
    config = get_preset("tiny")
    run.write_config(config)
    assert run.read_config() == config and run.has(files.CONFIG)
    assert run.read_history() == []
    run.write_history([{"epoch": 1, "g_loss": 0.5}])
    assert run.read_history() == [{"epoch": "1", "g_loss": "0.5"}]
    assert run.read_baseline() is None and run.record_holder() is run
    run.write_baseline(config, {"flair": "pix2pix_flair", "t1": "pix2pix_t1"})
    saved, members, schedule = run.read_baseline(with_schedule=True)
    assert saved == config and schedule == "paper"
    assert members == {"flair": run.member("pix2pix_flair"), "t1": run.member("pix2pix_t1")}
    assert run.record_holder() == run.member("pix2pix_flair")  # its run.json: the data


def test_lock_is_the_one_writer_lock(tmp_path):
    run = RunFolder(tmp_path)
    with run.lock().acquire():
        assert os.path.isfile(tmp_path / "lock.json")
        with pytest.raises(FolderInUse):
            run.lock().acquire()
    assert not os.path.exists(tmp_path / "lock.json")
