"""Run configuration: frozen dataclasses, the named presets, and JSON round trips.

One `RunConfig` flows from the command line to the builders and is saved as
`config.json` beside every run. Presets: `paper` (docs/method.md's numbers), `demo` (trains on
a 2-core CPU in minutes), `whole_case` (the whole-case recipe), `tiny` (tests).
"""

import dataclasses
import json

from dygan_tf.config.conditions import INPUTS, SOURCE_ANY
from dygan_tf.config.tasks import MODALITIES, PAPER_TARGETS, check_modality, targets_for

DYCONV_PLACEMENTS = ("none", "down", "up", "both")  # the paper's Table 4
LABEL_MODES = ("kernel", "input")
DISCRIMINATOR_KINDS = ("multiscale", "patch")
NORMS = ("instance", "batch", "none")
# --mixed-precision value -> Keras dtype policy.
PRECISION_POLICIES = {"none": "float32", "float16": "mixed_float16", "bfloat16": "mixed_bfloat16"}
PRECISIONS = tuple(PRECISION_POLICIES)
# --strategy: auto mirrors over all GPUs when there are several (see dygan_tf.training.distribute).
STRATEGIES = ("auto", "default", "mirrored", "multiworker")
MAX_TARGET_WEIGHT = 10  # --target-weights: a target drawn at most 10x as often as another
# --baseline: three pix2pix models, one per target. "pix2pix3" is the paper's (each member
# trained as one DyGAN run is: its batch and steps per epoch, so together 3x the
# updates); "pix2pix3-matched" splits one DyGAN run's steps among the members (each
# member's batch holds as many slices as DyGAN has targets): compute-matched.
BASELINES = ("pix2pix3", "pix2pix3-matched")
PIX2PIX3_SCHEDULES = {"pix2pix3": "paper", "pix2pix3-matched": "compute-matched"}


def check_choice(name, value, allowed):
    """ValueError unless `value` is one of `allowed`."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}. Received: {name}={value!r}")


def check_positive(**values):
    """ValueError unless every value (by name) is an int >= 1."""
    for name, value in values.items():
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int. Received: {name}={value!r}")


def check_generator(image_size, base_filters, depth, dyconv, label_mode):
    """`build_generator`'s arguments (a `ModelConfig` checks its own here too): the U-Net
    halves `image_size` `depth` times; the MGAN-style baseline (label planes at the
    input) has static kernels only."""
    check_positive(image_size=image_size, base_filters=base_filters, depth=depth)
    check_choice("dyconv", dyconv, DYCONV_PLACEMENTS)
    check_choice("label_mode", label_mode, LABEL_MODES)
    if label_mode == "input" and dyconv != "none":
        raise ValueError(
            "label_mode='input' (MGAN baseline) uses static kernels: it needs "
            f"dyconv='none'. Received: dyconv={dyconv!r}"
        )
    if image_size % 2**depth:
        raise ValueError(
            f"image_size must be divisible by 2**depth={2**depth}. "
            f"Received: image_size={image_size}"
        )


def check_discriminator(image_size, kind):
    """`build_discriminator`'s arguments (a `ModelConfig` checks its own here too): the
    multiscale D's coarsest branch works at 1/32 and needs 2x2 left for instance norm."""
    check_choice("kind", kind, DISCRIMINATOR_KINDS)
    size = 64 if kind == "multiscale" else 8
    if image_size % size:
        raise ValueError(
            f"A {kind} discriminator needs image_size divisible by {size}. "
            f"Received: image_size={image_size}"
        )


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    image_size: int = 256
    base_filters: int = 64
    depth: int = 4
    num_experts: int = 3
    dyconv: str = "up"  # none | down | up | both (the paper's Table 4)
    label_mode: str = "kernel"  # kernel (DyGAN) | input (MGAN-style baseline)
    norm: str = "instance"
    discriminator: str = "multiscale"  # multiscale | patch
    d_base_filters: int = 64
    d_dyconv: bool = True
    inputs: str = "single"  # single (the paper's 12-bit tasks) | multi (see conditions)
    # Axial neighbours K a side fed with each slice (2.5-D): 2K + 1 planes per modality
    # (`conditions.image_channels`); 0 = the slice alone, as every earlier run.
    context: int = 0

    def __post_init__(self):
        check_choice("inputs", self.inputs, INPUTS)
        if type(self.context) is not int or self.context < 0:
            raise ValueError(f"context must be an int >= 0. Received: context={self.context!r}")
        check_choice("norm", self.norm, NORMS)
        check_choice("discriminator", self.discriminator, DISCRIMINATOR_KINDS)
        check_positive(num_experts=self.num_experts, d_base_filters=self.d_base_filters)
        check_generator(
            self.image_size, self.base_filters, self.depth, self.dyconv, self.label_mode
        )
        check_discriminator(self.image_size, self.discriminator)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    epochs: int = 100
    batch_slices: int = 1  # source slices per step; each expands into one row per target
    lambda_l1: float = 100.0
    lr: float = 2e-4
    lr_decay: float = 0.98  # per epoch, both optimizers
    beta_1: float = 0.5
    source: str = "t2"
    targets: tuple = PAPER_TARGETS
    seed: int = 0
    jit_compile: bool = False
    mixed_precision: str = "none"  # none | float16 | bfloat16
    # Momentum of a moving average of G's weights, which is validated, saved and exported
    # in place of the last step's weights; 0 = off (the paper's).
    ema: float = 0.0
    # Multi-source runs: how often each target is drawn, one positive integer per entry
    # of `targets` (its 7 available sets stay equally likely); () = every target alike.
    target_weights: tuple = ()

    def __post_init__(self):
        # Modalities in any spelling (t2w, T2), kept in ours (t2).
        spell = lambda m: check_modality(m, "target modality") if isinstance(m, str) else m  # noqa: E731
        object.__setattr__(self, "targets", tuple(spell(t) for t in self.targets))
        object.__setattr__(self, "target_weights", tuple(self.target_weights))
        if self.source == SOURCE_ANY:  # every modality in turn, or several (multi)
            allowed = MODALITIES
        else:
            object.__setattr__(self, "source", check_modality(self.source, "source modality"))
            allowed = targets_for(self.source)
        if not self.targets or any(t not in allowed for t in self.targets):
            raise ValueError(
                f"targets must be a non-empty subset of {allowed} for source "
                f"{self.source!r}. Received: targets={self.targets}"
            )
        if self.target_weights and (
            len(self.target_weights) != len(self.targets)
            or any(
                type(w) is not int or not 1 <= w <= MAX_TARGET_WEIGHT for w in self.target_weights
            )
        ):
            raise ValueError(
                f"target_weights must be one integer in 1..{MAX_TARGET_WEIGHT} per target "
                f"{self.targets}. Received: target_weights={self.target_weights}"
            )
        if self.mixed_precision not in PRECISIONS:
            raise ValueError(
                f"mixed_precision must be one of {PRECISIONS}. Received: "
                f"mixed_precision={self.mixed_precision!r}"
            )
        out_of_range = {
            "lambda_l1": self.lambda_l1 < 0,
            "lr": self.lr <= 0,
            "lr_decay": not 0 < self.lr_decay <= 1,
            "ema": not 0 <= self.ema < 1,
            "epochs": self.epochs < 1,
            "batch_slices": self.batch_slices < 1,
        }
        received = [f"{name}={getattr(self, name)}" for name, out in out_of_range.items() if out]
        if received:  # only the values out of range: the command names their flags
            raise ValueError(
                "lambda_l1 must be >= 0, lr > 0, 0 < lr_decay <= 1, 0 <= ema < 1, epochs >= 1 "
                f"and batch_slices >= 1. Received: {', '.join(received)}"
            )


# (part, field) -> the default at which config.json leaves the field out.
OMITTED_AT_DEFAULT = {("model", "context"): 0}


@dataclasses.dataclass(frozen=True)
class RunConfig:
    preset: str = "paper"
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()

    def __post_init__(self):
        if self.train.target_weights and self.model.inputs != "multi":
            raise ValueError(
                "target_weights weigh the targets of a multi-source run (inputs='multi'). "
                f"Received: inputs={self.model.inputs!r}"
            )
        if self.model.inputs == "multi" and self.train.source != SOURCE_ANY:
            raise ValueError(
                "inputs='multi' takes every available modality: it needs "
                f"source={SOURCE_ANY!r}. Received: source={self.train.source!r}"
            )

    def to_dict(self):
        """The config as config.json holds it. Fields added after 0.1.0 are left out at
        their default (`OMITTED_AT_DEFAULT`), so a K = 0 run's config.json is what 0.1.0
        wrote and 0.1.0 reads it."""
        out = dataclasses.asdict(self)
        for (part, name), default in OMITTED_AT_DEFAULT.items():
            if out[part].get(name) == default:
                del out[part][name]
        return out

    def to_json(self):
        return json.dumps(self.to_dict(), indent=2) + "\n"

    @classmethod
    def from_dict(cls, data):
        return cls(
            preset=data["preset"],
            model=ModelConfig(**data["model"]),
            train=TrainConfig(**{**data["train"], "targets": tuple(data["train"]["targets"])}),
        )

    def override(self, **changes):
        """A copy with fields changed by name; each name is a ModelConfig or TrainConfig field."""
        model_fields = {f.name for f in dataclasses.fields(ModelConfig)}
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        model_changes, train_changes = {}, {}
        for name, value in changes.items():
            if value is None:
                continue
            if name in model_fields:
                model_changes[name] = value
            elif name in train_fields:
                train_changes[name] = value
            else:
                raise ValueError(f"Unknown config field {name!r}.")
        return dataclasses.replace(
            self,
            model=dataclasses.replace(self.model, **model_changes),
            train=dataclasses.replace(self.train, **train_changes),
        )


# pix2pix, the paper's baseline: the same U-Net with static convolutions and the 70x70
# PatchGAN discriminator. Its label is ignored (no DyConv reads it).
PIX2PIX_MODEL = dict(dyconv="none", label_mode="kernel", discriminator="patch", d_dyconv=False)


def as_pix2pix(config):
    """`config` with the pix2pix networks (same sizes, data and training settings)."""
    return config.override(**PIX2PIX_MODEL)


def pix2pix_member_config(config, target, schedule="paper"):
    """One member of a 3×pix2pix baseline: pix2pix for `target` alone.

    schedule "paper": trained as the paper trains every network, and exactly as a
    one-target pix2pix run of `config` (`--dyconv none --targets T`, a static PatchGAN):
    the same slices a step, so the same steps per epoch as DyGAN. "compute-matched":
    batches of as many slices as DyGAN has targets, so per epoch it sees every slice
    once in 1/T of the steps and the T members together take one DyGAN run's steps."""
    if schedule not in ("paper", "compute-matched"):
        raise ValueError(
            f"schedule must be 'paper' or 'compute-matched'. Received: schedule={schedule!r}"
        )
    slices = config.train.batch_slices
    if schedule == "compute-matched":
        slices *= len(config.train.targets)
    return as_pix2pix(config).override(targets=(target,), target_weights=(), batch_slices=slices)


PRESETS = {
    "paper": RunConfig(preset="paper"),
    # Sized for the one-command demo on 2 CPU cores (<= 15 min end to end). 64 px is the
    # multi-scale D's minimum; depth 3 keeps an 8x8 bottleneck (the paper's is 16x16): at
    # depth 4 the 4x4 bottleneck's instance norm made the generator paint one fixed bright
    # blob into every output (StyleGAN2's "droplet"). A higher rate than the paper's 2e-4
    # lets 15 short epochs beat both simple baselines on every target.
    "demo": RunConfig(
        preset="demo",
        model=ModelConfig(image_size=64, base_filters=16, depth=3, d_base_filters=16),
        train=TrainConfig(epochs=15, lr=1e-3),
    ),
    # The whole-case recipe (docs/how-to/translate.md): BraSyn's setting, every sequence
    # completed from whatever else a case holds (`--inputs multi`, four targets), trained
    # on shards of every brain slice (`dygan-build-tfrecords --source-slices all`), so
    # `translate` sees at test time the slices it trained on. 96 px is 2.25x the demo's
    # pixels and trains in 9-25 min on 2 busy CPU cores, by CPU (128 px: 1.8x the pixels).
    # The multi-scale D needs a multiple of 64, so D is the paper's single-scale patch D
    # (DyGAN). Two epochs, each the same number of slices of every case: ~2,500 steps
    # an epoch for 20 training cases (docs/results/whole-volume.md).
    "whole_case": RunConfig(
        preset="whole_case",
        model=ModelConfig(
            image_size=96,
            base_filters=16,
            depth=3,
            d_base_filters=16,
            discriminator="patch",
            inputs="multi",
        ),
        train=TrainConfig(epochs=2, lr=1e-3, ema=0.99, source=SOURCE_ANY, targets=MODALITIES),
    ),
    # The tests' preset: the paper's networks, small. Depth 2 (a 16x16 bottleneck):
    # each train step traces in ~10 % less time than at depth 3.
    "tiny": RunConfig(
        preset="tiny",
        model=ModelConfig(image_size=64, base_filters=4, depth=2, d_base_filters=4),
        train=TrainConfig(epochs=2),
    ),
}


def get_preset(name):
    """The `RunConfig` of a preset: "paper" (the paper's sizes), "demo" (64 px, minutes
    on a CPU), "whole_case" (the whole-case recipe: 96 px, four targets from any others)
    or "tiny" (the tests'); `override` changes any field.

    Example:

    >>> from dygan_tf.config import get_preset
    >>> config = get_preset("demo").override(epochs=5, lambda_l1=100.0)
    >>> config.model.image_size, config.train.epochs
    (64, 5)
    """
    if name not in PRESETS:
        raise ValueError(f"Unknown preset {name!r}: expected one of {', '.join(PRESETS)}.")
    return PRESETS[name]
