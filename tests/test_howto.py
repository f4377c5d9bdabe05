"""The how-to pages teach commands that work: every `dygan-*` command in a bash block of
docs/how-to/*.md is the installed name of a command whose own parser takes its flags,
and each block is either run here (tiny model, the phantom, paths substituted) or
listed with what it needs (BraTS, a GPU, TF Serving, a multi-machine cluster)."""

import glob
import importlib
import os
import re
import shlex

import pytest
import tomllib

from dygan_tf.utils import cli
from tests import helpers

HOWTO = os.path.join(helpers.REPO, "docs", "how-to")

# (page, block index) -> what it needs; a block not listed here is in RUN.
NEEDS = {
    ("backends.md", 0): "BraTS shards (its --demo line is the README's)",
    ("distributed.md", 0): "BraTS shards and several GPUs",
    ("distributed.md", 1): "a multi-machine cluster (TF_CONFIG)",
    ("evaluate.md", 0): "BraTS shards and a trained run",
    ("evaluate.md", 1): "trained runs of three modes",
    ("evaluate.md", 2): "trained runs of three modes (a 60-case phantom)",
    ("evaluate.md", 3): "a trained any-source run",
    ("evaluate.md", 4): "BraTS volumes and their predictions",
    ("evaluate.md", 5): "a trained multi-source run",
    ("export-and-serve.md", 1): "TF Serving (docker)",
    ("export-and-serve.md", 2): "TF Serving (REST)",
    ("export-and-serve.md", 3): "TF Serving (gRPC)",
    ("lambda-search.md", 0): "nothing: a synopsis of the flags (brackets)",
    ("lambda-search.md", 1): "the demo's shards (dygan-fit --demo)",
    ("modes.md", 0): "BraTS shards",
    ("train.md", 0): "BraTS 2019",
    ("train.md", 1): "minutes for a 10-case phantom (tests/test_data_cli.py builds phantoms)",
    ("train.md", 2): "BraTS shards and TensorBoard",
    ("train.md", 3): "BraTS shards",
    ("train.md", 4): "BraTS shards and a trained run",
    ("train.md", 5): "BraTS shards (Python: the paper's 100 epochs)",
    ("translate.md", 2): "BraTS volumes and 20-25 minutes of training (the whole-case recipe)",
    ("your-data.md", 0): "BraTS 2019-2023 roots",
    ("your-data.md", 1): "a model trained on BraTS 2023 and its cases",
    ("your-data.md", 2): "BraSyn's validation data",
}
RUN = {("translate.md", 0), ("export-and-serve.md", 0)}


def _scripts():
    with open(os.path.join(helpers.REPO, "pyproject.toml"), "rb") as f:
        scripts = tomllib.load(f)["project"]["scripts"]
    return {name: target.split(":")[0] for name, target in scripts.items()}


def _blocks():
    """[(page, index, language, text)] of every fenced block of the how-to pages."""
    blocks = []
    for path in sorted(glob.glob(os.path.join(HOWTO, "*.md"))):
        with open(path, encoding="utf-8") as f:
            found = re.findall(r"```(\w*)\n(.*?)```", f.read(), re.S)
        blocks += [(os.path.basename(path), i, lang, text) for i, (lang, text) in enumerate(found)]
    return blocks


def _commands(text):
    """The `dygan-*` command lines of a bash block, as argv lists (comments dropped,
    continuation lines joined, leading VAR=value settings skipped)."""
    commands = []
    for line in text.replace("\\\n", " ").splitlines():
        if "dygan-" not in line:
            continue
        words = shlex.split(line, comments=True)
        while words and re.fullmatch(r"[A-Z_]+=.*", words[0]):
            words = words[1:]
        for command in " ".join(shlex.quote(w) for w in words).split(" '&&' "):
            argv = shlex.split(command)
            if argv and argv[0].startswith("dygan-"):
                commands.append(argv)
    return commands


class _Parsed(Exception):
    pass


def test_every_block_is_run_or_listed_with_what_it_needs():
    code = [(page, i) for page, i, lang, _ in _blocks() if lang in ("bash", "python")]
    for block in code:
        assert (block in RUN) != (block in NEEDS), f"{block}: list it in RUN or NEEDS"
    assert RUN | set(NEEDS) == set(code)


def test_every_command_is_installed_and_its_flags_parse(monkeypatch):
    """Each command's own parser takes the flags (stopped right after parsing)."""
    scripts = _scripts()

    def parse_only(self, args=None, namespace=None):
        raise _Parsed(argparse_parse(self, args, namespace))

    argparse_parse = cli.ArgumentParser.parse_args
    monkeypatch.setattr(cli.ArgumentParser, "parse_args", parse_only)
    seen = 0
    for page, index, lang, text in _blocks():
        if lang != "bash" or "synopsis" in NEEDS.get((page, index), ""):
            continue  # a synopsis: [optional] flags
        for argv in _commands(text):
            assert argv[0] in scripts, f"{page} block {index}: {argv[0]} is not installed"
            module = importlib.import_module(scripts[argv[0]])
            with pytest.raises(_Parsed):
                module.main(argv[1:])
            seen += 1
    assert seen >= 20


@pytest.mark.slow
def test_the_runnable_blocks_run(run_dir, phantom_root, tmp_path, monkeypatch):
    """translate.md and export-and-serve.md's first blocks, on the tiny run folder and a
    phantom case, with their paths substituted."""
    scripts = _scripts()
    folder, cid = helpers.case_folder(phantom_root)
    case = tmp_path / "BraTS19_X"
    os.makedirs(case)
    for m in ("t2", "t1"):
        os.symlink(os.path.join(folder, f"{cid}_{m}.nii.gz"), case / f"BraTS19_X_{m}.nii.gz")
    os.symlink(os.path.join(folder, f"{cid}_t2.nii.gz"), tmp_path / "case_t2.nii.gz")
    monkeypatch.chdir(tmp_path)
    os.makedirs("runs")
    os.symlink(run_dir, "runs/demo")
    blocks = {(page, i): text for page, i, _, text in _blocks()}
    for block in (("export-and-serve.md", 0), ("translate.md", 0)):
        for argv in _commands(blocks[block]):
            module = importlib.import_module(scripts[argv[0]])
            result = helpers.run_in_process(module.main, *argv[1:])
            assert result.returncode == 0, (block, argv, result.stderr)
    assert sorted(os.listdir("saved_models")) == ["dygan", "dygan_flip"]
    assert len(os.listdir("out")) == 3
    assert sorted(os.listdir(case)) == sorted(
        ["BraTS19_X_t1.nii.gz", "BraTS19_X_t2.nii.gz"]
        + [f"BraTS19_X_{t}_synth.nii.gz" for t in ("flair", "t1ce")]
    )
