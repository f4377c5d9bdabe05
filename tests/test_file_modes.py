"""Files the project writes get the user's umask, as any other tool's would: 0644 under
umask 022 (atomic writes used to keep `tempfile.mkstemp`'s 0600)."""

import os
import stat

import numpy as np
import pytest

from dygan_tf.utils import atomic
from tests import helpers


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_writes_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        assert atomic.current_umask() == 0o027
        atomic.write_text_atomic(tmp_path / "a.txt", "x")
        assert mode(tmp_path / "a.txt") == 0o640
        os.umask(0o022)
        atomic.write_json_atomic(tmp_path / "b.json", {})
        with atomic.atomic_path(tmp_path / "c.png") as tmp:
            with open(tmp, "wb") as f:
                f.write(b"png")
        assert mode(tmp_path / "b.json") == mode(tmp_path / "c.png") == 0o644
    finally:
        os.umask(old)


def test_outputs_of_the_commands_are_0644(umask_022, tiny_generator, phantom_root, tmp_path):
    import nibabel as nib

    from dygan_tf import export
    from dygan_tf.data import shards
    from dygan_tf.data.manifest import manifest_path
    from dygan_tf.inference import translation
    from dygan_tf.run_folder import files as run_files

    config, generator = tiny_generator
    run = tmp_path / "run"
    run.mkdir()
    run_files.write_config(run, config)
    run_files.save_generator(generator, run)
    for name in (run_files.CONFIG, run_files.GENERATOR):
        assert mode(run / name) == 0o644, name

    folder, cid = helpers.case_folder(phantom_root)
    header = nib.load(os.path.join(folder, f"{cid}_t2.nii.gz")).header
    out = {"flair": tmp_path / "nii" / f"{cid}_flair_synth.nii.gz"}
    volume = np.zeros(header.get_data_shape(), np.float32)
    translation.write_outputs({"flair": volume}, out, header)
    assert mode(out["flair"]) == 0o644

    records = tmp_path / "records"
    shards.build(str(phantom_root), str(records), **{**helpers.BUILD_ARGS, "workers": 1})
    assert mode(manifest_path(records)) == 0o644
    assert all(mode(p) == 0o644 for p in records.iterdir())

    saved = tmp_path / "saved_models" / "dygan" / "1"
    result = helpers.run_in_process(export.main, "--run", run, "--out", saved)
    assert result.returncode == 0, result.stderr
    from dygan_tf.inference.savedmodel import METADATA, MODEL_CARD

    for name in (METADATA, MODEL_CARD, "saved_model.pb"):
        assert mode(saved / name) == 0o644, name
    assert mode(saved) == 0o755
