"""The commands' flag types (`positive_int`, modality names) and the flags several
commands share: the configuration flags of `fit` and the λ search (a preset plus
overrides), `--backend`, `--steps-per-epoch` and `--workers`.

    add_config_flags(parser)                  # --preset --epochs ... --jit-compile
    config = config_from_flags(args, "paper") # the preset with every given flag applied

Each flag maps onto one `RunConfig` field; the choices come from `dygan_tf.config.run_config`, so
the two commands cannot drift apart. The config checks its own values: a `ValueError`
it raises is reported naming the flag of the field it received.
"""

import argparse
import contextlib
import os
import re

from dygan_tf.config import run_config as config_lib
from dygan_tf.config.conditions import INPUTS, SOURCE_ANY
from dygan_tf.config.tasks import MODALITIES, check_modality, targets_for
from dygan_tf.utils.errors import UserError


def _int_at_least(low, text):
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"expected >= {low}, found {value}")
    return value


def positive_int(text):
    """argparse `type=` of a count: "0" is one line naming the flag ("argument
    --workers: expected >= 1, found 0")."""
    return _int_at_least(1, text)


def non_negative_int(text):
    """argparse `type=` of a seed: "-1" is one line naming the flag."""
    return _int_at_least(0, text)


def _argument_type(parse):
    """An argparse `type=` of `parse`, whose `UserError` becomes argparse's one line
    naming the flag (argparse would replace its message by "invalid value")."""

    def parsed(text):
        try:
            return parse(text)
        except UserError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    parsed.__name__ = parse.__name__
    return parsed


@_argument_type
def source_modality(text):
    """`--source`: a modality in any spelling (t2w, T2: "t2"), or "any"."""
    if text.lower() == SOURCE_ANY:
        return SOURCE_ANY
    return check_modality(text, "source modality")


@_argument_type
def target_modalities(text):
    """`--targets flair,T1n`: the modalities in any spelling, ("flair", "t1")."""
    return tuple(check_modality(t, "target modality") for t in text.split(",") if t.strip())


# How a training run goes, beyond its config: flag -> add_argument's keywords. `fit` takes
# them all, the λ search the first two.
RUN_FLAGS = {
    "--backend": dict(
        help="Keras backend that trains: tensorflow (default, or KERAS_BACKEND), jax or torch"
    ),
    "--steps-per-epoch": dict(type=positive_int, help="cap steps per epoch (tests)"),
    "--baseline": dict(
        choices=config_lib.BASELINES,
        help="pix2pix3: the paper's 3×pix2pix, each member trained as one DyGAN run "
        "(its batch and steps per epoch); pix2pix3-matched: the three together take one "
        "DyGAN run's steps (compute-matched)",
    ),
    "--allow-changed-data": dict(
        action="store_true",
        help="resume although the shards differ from those the run began on (run.json "
        "records their manifest's sha256; refused otherwise)",
    ),
    "--strategy": dict(
        default="auto",
        choices=config_lib.STRATEGIES,
        help="auto: mirrored over all GPUs when there are several",
    ),
    "--cpu-replicas": dict(
        type=positive_int,
        default=1,
        help="split the CPU into N logical devices (multi-replica without GPUs)",
    ),
}


def add_run_flags(parser, flags=tuple(RUN_FLAGS)):
    """The `RUN_FLAGS` named in `flags` (default: all of them, as `fit` takes them)."""
    for flag in flags:
        parser.add_argument(flag, **RUN_FLAGS[flag])


def add_workers_flag(parser):
    """--workers, the processes that build data (default: one per CPU)."""
    parser.add_argument("--workers", type=positive_int, default=os.cpu_count() or 1)


# Switches parsed as a choice, never with type=bool (which reads "false" as True).
ON_OFF = {"on": True, "off": False}

# flag -> (RunConfig field, type, choices, help). `--base-filters` sets the generator's
# and the discriminator's base width alike.
CONFIG_FLAGS = {
    "--epochs": ("epochs", int, None, None),
    "--image-size": ("image_size", int, None, None),
    "--base-filters": ("base_filters", int, None, "base filters of G and D"),
    "--experts": ("num_experts", int, None, "DyConv experts K"),
    "--lambda-l1": ("lambda_l1", float, None, "L1 weight λ"),
    "--lr": ("lr", float, None, None),
    "--lr-decay": ("lr_decay", float, None, "Adam's rate is multiplied by this once per epoch"),
    "--ema": (
        "ema",
        float,
        None,
        "momentum of a moving average of G's weights (e.g. 0.995), validated and saved in "
        "place of the last step's; 0 = off (the paper's)",
    ),
    "--source": (
        "source",
        source_modality,
        None,
        "source modality (flair, t1, t1ce, t2 or BraTS 2023's t2f, t1n, t1c, t2w; targets: "
        "the other three), or 'any': all 12 tasks in one model",
    ),
    "--inputs": (
        "inputs",
        str,
        INPUTS,
        "single: one source (the paper's); multi: all available modalities at once",
    ),
    "--context": (
        "context",
        non_negative_int,
        None,
        "axial neighbours K a side fed with each slice as input channels (2.5-D: 2K + 1 "
        "planes per modality); the shards must be built with --context K or more",
    ),
    "--targets": ("targets", target_modalities, None, "comma-separated, e.g. flair,t1,t1ce"),
    "--target-weights": (
        "target_weights",
        str,
        None,
        "multi-source: how often each target is drawn, e.g. flair=2 (others 1)",
    ),
    "--discriminator": ("discriminator", str, config_lib.DISCRIMINATOR_KINDS, None),
    "--dyconv": ("dyconv", str, config_lib.DYCONV_PLACEMENTS, "DyConv placement (Table 4)"),
    "--d-dyconv": (
        "d_dyconv",
        str,
        tuple(ON_OFF),
        "DyConv in the discriminator (on: Ms_DyGAN's; off: a static D, the paper's DyGAN "
        "with --discriminator patch)",
    ),
    "--label-mode": ("label_mode", str, config_lib.LABEL_MODES, None),
    "--seed": ("seed", int, None, None),
    "--mixed-precision": ("mixed_precision", str, config_lib.PRECISIONS, None),
}
FLAG_OF_FIELD = {field: flag for flag, (field, *_) in CONFIG_FLAGS.items()}


def _dest(flag):
    return flag[2:].replace("-", "_")


def _shown(value):
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def preset_defaults(field):
    """ "paper 256, demo 64, tiny 64": a config field's value in each preset, for --help."""
    values = []
    for name, config in config_lib.PRESETS.items():
        section = next((c for c in (config.model, config.train) if hasattr(c, field)), None)
        if section is not None:
            values.append(f"{name} {_shown(getattr(section, field))}")
    return ", ".join(values)


def _preset_sizes():
    """Each preset's sizes, for --preset's help."""
    return "; ".join(
        f"{name}: {c.model.image_size} px, {c.model.base_filters} filters, depth "
        f"{c.model.depth}, {c.train.epochs} epochs, batch {c.train.batch_slices}"
        for name, c in config_lib.PRESETS.items()
    )


def add_config_flags(parser, exclude=(), default_preset="paper"):
    """Adds --preset, every override in CONFIG_FLAGS but `exclude`, and --jit-compile;
    each help says the value every preset gives it."""
    parser.add_argument(
        "--preset",
        choices=sorted(config_lib.PRESETS),
        help=f"the sizes a run starts from (default: {default_preset}) -- {_preset_sizes()}",
    )
    for flag, (field, kind, choices, help_text) in CONFIG_FLAGS.items():
        if flag not in exclude:
            defaults = preset_defaults(field)
            if defaults:
                said = f"{help_text} " if help_text else ""
                help_text = f"{said}(default: the preset's: {defaults})"
            parser.add_argument(flag, type=kind, choices=choices, help=help_text)
    parser.add_argument(
        "--jit-compile", action="store_true", default=None, help="compile the train step with XLA"
    )


def parse_target_weights(text, targets):
    """`--target-weights flair=2,t1=1` -> one weight per entry of `targets` (unnamed: 1)."""
    weights = {}
    for item in (part.strip() for part in text.split(",")):
        name, sep, value = item.partition("=")
        name = name.strip()
        with contextlib.suppress(ValueError):
            name = check_modality(name)  # any spelling
        if not sep or name not in targets or name in weights:
            raise UserError(
                f"--target-weights: expected target=weight for distinct targets among "
                f"{','.join(targets)} (e.g. flair=2), found {item!r}"
            )
        try:
            weights[name] = int(value)
        except ValueError:
            raise UserError(
                f"--target-weights: {name}'s weight is not an integer: {value!r}"
            ) from None
        if not 1 <= weights[name] <= config_lib.MAX_TARGET_WEIGHT:
            raise UserError(
                f"--target-weights: {name}'s weight must be in 1..{config_lib.MAX_TARGET_WEIGHT}, "
                f"found {weights[name]}"
            )
    return tuple(weights.get(t, 1) for t in targets)


def config_from_flags(args, default_preset, label_blind_ok=False):
    """The preset (`args.preset` or `default_preset`) with every given flag applied.

    Raises a `UserError` naming the flag for a value out of range or a combination the
    config refuses (e.g. `--label-mode input` with DyConvs, or a generator that cannot
    see the task: `check_sees_task`, skipped with `label_blind_ok` when the config only
    seeds a baseline that builds its own networks).
    """
    get = lambda flag: getattr(args, _dest(flag), None)  # noqa: E731
    changes = {
        field: get(flag)
        for flag, (field, *_) in CONFIG_FLAGS.items()
        if flag != "--target-weights" and hasattr(args, _dest(flag))
    }
    changes["jit_compile"] = getattr(args, "jit_compile", None)
    if get("--base-filters") is not None:
        changes["d_base_filters"] = get("--base-filters")
    if get("--d-dyconv") is not None:
        changes["d_dyconv"] = ON_OFF[get("--d-dyconv")]
    source = get("--source")
    if get("--targets") is None:
        if source == SOURCE_ANY or (get("--inputs") == "multi" and source is None):
            changes["targets"] = MODALITIES
        elif source is not None:
            changes["targets"] = targets_for(source)
    if get("--inputs") == "multi" and source is None:
        changes["source"] = SOURCE_ANY
    if get("--target-weights") is not None:
        targets = (
            changes.get("targets")
            or config_lib.get_preset(args.preset or default_preset).train.targets
        )
        changes["target_weights"] = parse_target_weights(get("--target-weights"), targets)
    if get("--label-mode") == "input" and get("--dyconv") is None:
        changes["dyconv"] = "none"  # MGAN-style: static kernels, label at the input
    try:  # ModelConfig and TrainConfig check their values
        config = config_lib.get_preset(args.preset or default_preset).override(**changes)
    except ValueError as e:
        raise _naming_the_flag(e) from None
    if not label_blind_ok:
        check_sees_task(config)
    return config


def _naming_the_flag(error):
    """A config's `ValueError` ("... Received: lr=0.0") as a `UserError` that starts with
    the flag of the field it received ("--lr: ...")."""
    received = re.search(r"Received: (\w+)=", str(error))
    flag = FLAG_OF_FIELD.get(received.group(1)) if received else None
    return UserError(f"{flag}: {error}" if flag else str(error))


def check_sees_task(config):
    """Refuses a generator that cannot see which target it makes: static kernels
    (`--dyconv none`) with the label in the kernels (`--label-mode kernel`) read no
    label, so several targets would get one identical output. With one target it is
    pix2pix; three pix2pix models are `--baseline pix2pix3`.

    Checked here, where flags become a config, not in `RunConfig`: `as_pix2pix` builds
    such label-blind members (one target each) on purpose.
    """
    model, targets = config.model, config.train.targets
    if model.dyconv == "none" and model.label_mode == "kernel" and len(targets) > 1:
        raise UserError(
            f"--dyconv none with --label-mode kernel: the generator cannot see the task, so "
            f"its {len(targets)} targets ({','.join(targets)}) would get identical outputs; "
            "use --label-mode input (label planes), --baseline pix2pix3 (one pix2pix per "
            "target) or one --targets"
        )
