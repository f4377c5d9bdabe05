"""DyGAN: the generator and discriminator trained together with LSGAN + lambda * L1.

`train_step` follows docs/method.md's objective (fake target 0 for D; the paper's eq. 3 typo is
not copied). Losses are averaged over the *global* batch, so under a tf.distribute
strategy the summed replica gradients and the logged losses equal a one-device run.

The losses are `keras.ops` code shared by every backend (losses.py); how each backend
takes and applies the two networks' gradients is steps.py's.
"""

import contextlib
import copy

import keras
from keras import ops

from dygan_tf.models import losses as objectives
from dygan_tf.models import steps
from dygan_tf.utils import backend


def _all_layers(model):
    """The layers of `model`, and of the models nested in it."""
    for layer in getattr(model, "layers", []):
        yield layer
        yield from _all_layers(layer)


def leaf_layers(model):
    """The layers of `model` that are not models themselves, nested models' included."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from leaf_layers(layer)
        else:
            yield layer


@keras.saving.register_keras_serializable(package="dygan_tf")
class DyGAN(keras.Model):
    """A generator G(image, task) and a discriminator D(image, target, task) trained
    together with LSGAN + lambda * L1 (docs/method.md).

    Args:
        generator: a Keras model `{"image": [B, H, W, 1], "task": [B, 12]}` -> `[B, H, W, 1]`
            in [-1, 1] (`dygan_tf.models.generator.build_generator`).
        discriminator: a Keras model `{"image", "target": [B, H, W, 1], "task": [B, 12]}`
            -> patch scores `[B, h, w, 1]` (`dygan_tf.models.discriminator.build_discriminator`).
            It must treat examples independently (instance norm, per-example DyConv
            routing): the train step scores real and fake pairs in one call.
        lambda_l1: weight of the L1 term in G's loss (the paper's 100).

    Data: `fit` takes elements `(image, target, task)`: source slices `[B, H, W, 1]` in
    [-1, 1], the real target slices (same shape) and task codes `[B, 12]`
    (`dygan_tf.config.tasks.task_code`). `train_step` returns `d_loss`, `g_gan_loss`,
    `g_l1_loss` and `g_loss`; `test_step` returns `l1`, `psnr` and `ssim`.

    Call: `gan({"image": x, "task": c})` runs the generator: `[B, H, W, 1]`, float32.

    Example:

    ```python
    from dygan_tf.config import task_code
    from dygan_tf.models import DyGAN, build_discriminator, build_generator

    generator = build_generator(image_size=64, base_filters=8, depth=3)
    discriminator = build_discriminator(image_size=64, base_filters=8)
    gan = DyGAN(generator, discriminator, lambda_l1=100.0)
    gan.compile(
        g_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
        d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5),
    )
    image = np.zeros((3, 64, 64, 1), "float32")  # one T2 slice per target, in [-1, 1]
    target = np.zeros((3, 64, 64, 1), "float32")  # the real FLAIR, T1, T1CE slices
    task = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")])
    gan.fit(x=image, y=target, sample_weight=task, batch_size=3, epochs=1, verbose=0)
    fake = gan({"image": image, "task": task})  # (3, 64, 64, 1)
    ```
    """

    # One discriminator call on real and fake pairs stacked along the batch, instead of
    # two (the same numbers; benchmarks.profile_step measures both ways). Not for a D
    # with batch norm, whose statistics would then mix real and fake pairs.
    stack_discriminator_calls = True

    def __init__(self, generator, discriminator, lambda_l1=100.0, **kwargs):
        super().__init__(**kwargs)
        if lambda_l1 < 0:
            raise ValueError(f"`lambda_l1` must be >= 0. Received: lambda_l1={lambda_l1}")
        self.generator = generator
        self.discriminator = discriminator
        self.lambda_l1 = float(lambda_l1)
        self._discriminator_mixes_examples = any(
            isinstance(layer, keras.layers.BatchNormalization)
            for layer in _all_layers(discriminator)
        )
        self.loss_trackers = {name: keras.metrics.Mean(name=name) for name in objectives.LOSS_NAMES}
        self.eval_trackers = {
            name: keras.metrics.Mean(name=name) for name in objectives.VALIDATION_NAMES
        }
        # Both networks are functional and already built. Saying so keeps Keras from
        # trying to build this model by calling it on `x` alone (which fails under
        # MirroredStrategy, where fit() builds with the first element of the data).
        self.built = True

    def dyconv_input_shapes(self, rows):
        """[(layer, input shape with its batch)] of every DyConv2D of G and D in a train
        step of `rows` generator rows: D sees twice that when the step scores the real
        and fake pairs in one call (`compute_losses`)."""
        from dygan_tf.layers.dyconv import DyConv2D

        stacked = self.stack_discriminator_calls and not self._discriminator_mixes_examples
        found = []
        for network, batch in (
            (self.generator, rows),
            (self.discriminator, 2 * rows if stacked else rows),
        ):
            for layer in leaf_layers(network):
                if isinstance(layer, DyConv2D):
                    inputs = layer.input
                    x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
                    found.append((layer, (batch, *x.shape[1:])))
        return found

    def compile(self, g_optimizer, d_optimizer, **kwargs):
        """Keras compile options (jit_compile, steps_per_execution) plus two optimizers.

        On JAX the step is always compiled with XLA (run eagerly, every operation would
        compile on its own: a tiny model's first epoch took 115 s so)."""
        if backend.is_jax():
            kwargs["jit_compile"] = True
        super().compile(optimizer=None, **kwargs)
        if "mixed_float16" in (self.dtype_policy.name, self.generator.dtype_policy.name):
            # float16 gradients underflow without loss scaling; each optimizer keeps
            # its own dynamic scale.
            g_optimizer = objectives.with_loss_scaling(g_optimizer, "g_optimizer")
            d_optimizer = objectives.with_loss_scaling(d_optimizer, "d_optimizer")
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer
        # Creating the slots now, not inside the first traced step, spares tf.function
        # a second trace of the whole train step.
        g_optimizer.build(self.generator.trainable_variables)
        d_optimizer.build(self.discriminator.trainable_variables)
        if backend.is_jax():
            # Keras's JAX trainer carries `self.optimizer.variables` through each step.
            self.optimizer = steps.OptimizerPair(g_optimizer, d_optimizer)

    @property
    def metrics(self):
        return list(self.loss_trackers.values()) + list(self.eval_trackers.values())

    def call(self, inputs, training=False):
        return self.generator(inputs, training=training)

    @property
    def keeps_average(self):
        """Whether G's optimizer keeps a moving average of G's weights (`--ema`)."""
        return bool(getattr(_inner(self.g_optimizer), "use_ema", False))

    @contextlib.contextmanager
    def averaged_generator(self):
        """The generator, holding the moving average of its weights inside the block when
        G's optimizer keeps one (its own weights again after it); else as it is.

        Validation, the saved generator.keras and exports see the average; training and
        the checkpoints (which hold the average too, in G's optimizer) keep the raw weights.
        """
        if not self.keeps_average:
            yield self.generator
            return
        variables = self.generator.trainable_variables
        saved = [keras.ops.convert_to_numpy(v) for v in variables]
        self.g_optimizer.finalize_variable_values(variables)
        try:
            yield self.generator
        finally:
            for variable, value in zip(variables, saved):
                variable.assign(value)

    def finish_training(self):
        """Leaves the generator holding its weights' moving average for good, when G's
        optimizer keeps one (as Keras's `fit` does for a model's own optimizer)."""
        if self.keeps_average:
            self.g_optimizer.finalize_variable_values(self.generator.trainable_variables)

    def compute_losses(self, image, target, task, training=True):
        """All loss terms for one (per-replica) batch, each a scalar mean over it."""
        image, target, task = (ops.convert_to_tensor(v) for v in (image, target, task))
        fake = self.generator({"image": image, "task": task}, training=training)
        if self.stack_discriminator_calls and not self._discriminator_mixes_examples:
            # One D call on [real; fake]: instance norm and DyConv routing see one example
            # at a time, so this equals two calls (tested) and halves D's op launches.
            pairs = {
                "image": ops.concatenate([image, image], 0),
                "target": ops.concatenate([ops.cast(target, fake.dtype), fake], 0),
                "task": ops.concatenate([task, task], 0),
            }
            d_real, d_fake = ops.split(self.discriminator(pairs, training=training), 2)
        else:
            d_real = self.discriminator(
                {"image": image, "target": target, "task": task}, training=training
            )
            d_fake = self.discriminator(
                {"image": image, "target": fake, "task": task}, training=training
            )
        return objectives.gan_losses(d_real, d_fake, target, fake, self.lambda_l1)

    def train_step(self, *args):
        """One step on both networks (Keras passes `data`; on JAX `state, data`):
        `steps.train_step`."""
        return steps.train_step(self, *args)

    def evaluation_terms(self, image, target, task):
        """{"l1": scalar, "psnr", "ssim": per image} of G's output against `target`."""
        fake = self.generator({"image": image, "task": task}, training=False)
        return objectives.validation_terms(target, fake)

    def test_step(self, *args):
        """Validation on one batch (Keras passes `data`; on JAX `state, data`):
        `steps.test_step`."""
        return steps.test_step(self, *args)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "generator": keras.saving.serialize_keras_object(self.generator),
                "discriminator": keras.saving.serialize_keras_object(self.discriminator),
                "lambda_l1": self.lambda_l1,
            }
        )
        return config

    @classmethod
    def from_config(cls, config):
        # Keras's deserializer pops keys from the nested configs: work on a copy.
        config = copy.deepcopy(config)
        config["generator"] = keras.saving.deserialize_keras_object(config["generator"])
        config["discriminator"] = keras.saving.deserialize_keras_object(config["discriminator"])
        return cls(**config)


def _inner(optimizer):
    return getattr(optimizer, "inner_optimizer", optimizer)
