import inspect

import keras
import numpy as np
import pytest
import tensorflow as tf

from dygan_tf.config.run_config import get_preset
from dygan_tf.models import optimizers
from dygan_tf.models.builders import build_dygan, build_networks
from dygan_tf.models.dygan import DyGAN
from dygan_tf.training.distribute import make_strategy
from tests.helpers import t2_task_batch

TINY = get_preset("tiny")
TINY_PATCH = TINY.override(discriminator="patch")  # helpers.PATCH_D
SIZE = TINY.model.image_size


def _fixed_discriminator():
    """D(x, y, c) = 0.5 * avgpool8(y) + 0.25 * avgpool8(x): no weights, easy to reproduce."""
    image = keras.Input((SIZE, SIZE, 1), name="image")
    target = keras.Input((SIZE, SIZE, 1), name="target")
    task = keras.Input((12,), name="task")
    pooled_y = keras.layers.AveragePooling2D(8)(target)
    pooled_x = keras.layers.AveragePooling2D(8)(image)
    out = keras.layers.Add()(
        [keras.layers.Rescaling(0.5)(pooled_y), keras.layers.Rescaling(0.25)(pooled_x)]
    )
    return keras.Model({"image": image, "target": target, "task": task}, out)


def _pool8(a):
    b, h, w, c = a.shape
    return a.reshape(b, h // 8, 8, w // 8, 8, c).mean(axis=(2, 4))


def test_loss_terms_equal_hand_computed_values():
    keras.utils.set_random_seed(0)
    generator, _ = build_networks(TINY.model)
    gan = DyGAN(generator, _fixed_discriminator(), lambda_l1=7.0)
    image, target, task = t2_task_batch(2, SIZE)
    losses = {
        k: float(v) for k, v in gan.compute_losses(image, target, task, training=False).items()
    }
    fake = generator({"image": image, "task": task}).numpy()
    d_real = 0.5 * _pool8(target) + 0.25 * _pool8(image)
    d_fake = 0.5 * _pool8(fake) + 0.25 * _pool8(image)
    d_loss = 0.5 * np.mean((d_real - 1) ** 2) + 0.5 * np.mean(d_fake**2)  # fake target 0
    g_gan = 0.5 * np.mean((d_fake - 1) ** 2)
    g_l1 = np.mean(np.abs(target - fake))
    assert losses["d_loss"] == pytest.approx(d_loss, rel=1e-5)
    assert losses["g_gan_loss"] == pytest.approx(g_gan, rel=1e-5)
    assert losses["g_l1_loss"] == pytest.approx(g_l1, rel=1e-5)
    assert losses["g_loss"] == pytest.approx(g_gan + 7.0 * g_l1, rel=1e-5)


class _RawWeights(keras.callbacks.Callback):
    """G's weights after every training step."""

    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append([w.numpy().copy() for w in self.model.generator.trainable_weights])


def test_fit_moves_weights_with_finite_losses_and_keeps_their_average():
    # --ema 0.5: G's optimizer also keeps avg = w_1 after the first step, then
    # avg = 0.5 * avg + 0.5 * w_t (Keras's use_ema); that is what validation and saving see.
    keras.utils.set_random_seed(0)
    gan = build_dygan(TINY_PATCH.override(ema=0.5), steps_per_epoch=2)
    assert gan.keeps_average and not build_dygan(TINY_PATCH).keeps_average
    before_g = [w.numpy().copy() for w in gan.generator.trainable_weights]
    before_d = [w.numpy().copy() for w in gan.discriminator.trainable_weights]
    data = tf.data.Dataset.from_tensor_slices(t2_task_batch(2, SIZE)).batch(3)
    raw = _RawWeights()
    history = gan.fit(data, epochs=2, validation_data=data, verbose=0, callbacks=[raw]).history
    assert len(raw.steps) == 4
    expected = raw.steps[0]
    for step in raw.steps[1:]:
        expected = [0.5 * a + 0.5 * w for a, w in zip(expected, step)]
    with gan.averaged_generator() as generator:
        for got, want in zip(generator.trainable_weights, expected):
            np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    for got, want in zip(gan.generator.trainable_weights, raw.steps[-1]):
        np.testing.assert_array_equal(got.numpy(), want)  # the raw weights are back
    assert any(not np.allclose(a, w) for a, w in zip(expected, raw.steps[-1]))
    for name in ("d_loss", "g_gan_loss", "g_l1_loss", "g_loss", "val_l1", "val_psnr", "val_ssim"):
        assert len(history[name]) == 2 and np.isfinite(history[name]).all(), name
    moved_g = [
        np.abs(w.numpy() - b).max() for w, b in zip(gan.generator.trainable_weights, before_g)
    ]
    moved_d = [
        np.abs(w.numpy() - b).max() for w, b in zip(gan.discriminator.trainable_weights, before_d)
    ]
    assert min(moved_g) > 0 and min(moved_d) > 0
    # Every expert kernel and the routing of every DyConv learned something.
    assert all(
        np.abs(w.numpy() - b).max() > 0
        for w, b in zip(gan.generator.trainable_weights, before_g)
        if "routing" in w.path
    )
    out = gan({"image": t2_task_batch(1, SIZE)[0], "task": t2_task_batch(1, SIZE)[2]})
    assert out.shape == (3, SIZE, SIZE, 1)
    gan.finish_training()  # for good: the average, as fit leaves a run's generator
    for got, want in zip(gan.generator.trainable_weights, expected):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)


def _train_copy(weights, strategy, data, steps, optimizer):
    with strategy.scope():
        gan = build_dygan(TINY_PATCH)
        gan.set_weights(weights)
        gan.compile(g_optimizer=optimizer(), d_optimizer=optimizer())
    history = gan.fit(data, epochs=1, steps_per_epoch=steps, verbose=0).history
    return gan, history


def test_two_replicas_equal_one_device_on_the_same_global_batch():
    # SGD moves weights in proportion to the gradient, so a replica-scaling error (2x)
    # shows directly. (Adam's first steps are ~lr*sign(g): they hide scale errors and
    # amplify float summation-order noise on near-zero gradients by lr/epsilon.)
    make = lambda: keras.optimizers.SGD(1e-3)  # noqa: E731
    keras.utils.set_random_seed(0)
    weights = build_dygan(TINY_PATCH).get_weights()
    # Global batch 6 = 2 slices x 3 tasks: one slice per replica.
    data = tf.data.Dataset.from_tensor_slices(t2_task_batch(6, SIZE, seed=1)).batch(6)
    one, one_history = _train_copy(
        weights, tf.distribute.OneDeviceStrategy("/cpu:0"), data, 2, make
    )
    # The strategy `fit --strategy mirrored --cpu-replicas 2` trains with.
    two, two_history = _train_copy(weights, make_strategy("mirrored", 2), data, 2, make)
    assert two.distribute_strategy.num_replicas_in_sync == 2
    for a, b in zip(one.get_weights(), two.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)
    for name, values in one_history.items():
        np.testing.assert_allclose(values, two_history[name], rtol=1e-5, err_msg=name)
    moved = max(np.abs(a - b).max() for a, b in zip(weights, one.get_weights()))
    assert moved > 1e-5


def test_one_stacked_discriminator_call_equals_two_calls(monkeypatch):
    keras.utils.set_random_seed(3)
    generator, discriminator = build_networks(TINY.model)  # multi-scale DyConv D
    gan = DyGAN(generator, discriminator, lambda_l1=5.0)
    image, target, task = t2_task_batch(1, SIZE, seed=2)

    def losses_and_grads(stacked):
        monkeypatch.setattr(DyGAN, "stack_discriminator_calls", stacked)
        with tf.GradientTape(persistent=True) as tape:
            losses = gan.compute_losses(image, target, task, training=True)
        grads = tape.gradient(losses["g_loss"], generator.trainable_variables)
        grads += tape.gradient(losses["d_loss"], discriminator.trainable_variables)
        return {k: float(v) for k, v in losses.items()}, [g.numpy() for g in grads]

    stacked_losses, stacked_grads = losses_and_grads(True)
    losses, grads = losses_and_grads(False)
    for name, value in losses.items():
        assert stacked_losses[name] == pytest.approx(value, rel=1e-5), name
    for got, want in zip(stacked_grads, grads):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def _adam_run(optimizer_class, initial, gradients, strategy):
    """Variables, slots and graph size after `gradients` steps of `optimizer_class` (SPEC's
    schedule, beta_1 0.5, a weight average) in a compiled step under `strategy`."""
    with strategy.scope():
        variables = [keras.Variable(x) for x in initial]
        schedule = keras.optimizers.schedules.ExponentialDecay(2e-4, 2, 0.98, staircase=True)
        optimizer = optimizer_class(
            learning_rate=schedule, beta_1=0.5, use_ema=True, ema_momentum=0.9
        )
        optimizer.build(variables)

    @tf.function
    def step(grads):
        def replica_step():  # the loss sum(w * g) has gradient g (summed over replicas)
            with tf.GradientTape() as tape:
                loss = sum(tf.reduce_sum(v.value * g) for v, g in zip(variables, grads))
            optimizer.apply(tape.gradient(loss, [v.value for v in variables]), variables)

        strategy.run(replica_step)

    for grads in gradients:
        step([tf.constant(g) for g in grads])
    graph = step.get_concrete_function([tf.constant(g) for g in gradients[0]]).graph
    values = [v.numpy() for v in variables] + [v.numpy() for v in optimizer.variables]
    return values, len(graph.get_operations())


@pytest.mark.parametrize("replicas", [1, 2])
def test_adam_updates_bit_for_bit_as_keras_adam_in_a_smaller_graph(replicas):
    # optimizers.Adam builds the step's rate and constants once per step instead of once
    # per variable: the same operations on the same values, so the same bits.
    rng = np.random.RandomState(0)
    shapes = [(3, 3, 2, 4), (4,), (5, 7), (1,)]
    # Weights start at 0, so they hold the updates' own bits (a weight of magnitude 1
    # would round away a last-bit difference in an update of 1e-4).
    initial = [np.zeros(s, "float32") for s in shapes]
    gradients = [[rng.normal(size=s).astype("float32") for s in shapes] for _ in range(5)]
    if replicas == 1:
        strategy = tf.distribute.get_strategy()
    else:
        strategy = make_strategy("mirrored", 2)
    theirs, their_ops = _adam_run(keras.optimizers.Adam, initial, gradients, strategy)
    ours, our_ops = _adam_run(optimizers.Adam, initial, gradients, strategy)
    assert len(ours) == len(theirs) == 4 + 3 * 4 + 1  # weights; m, v, average; iterations
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    assert our_ops < their_ops
    with pytest.raises(ValueError, match="amsgrad"):
        optimizers.Adam(amsgrad=True)


def test_the_private_keras_fields_adam_reads_are_there():
    # optimizers.Adam.update_step reads Keras's own slots: `_momentums`, `_velocities`
    # (one per variable, in `_get_variable_index` order). Written against Keras 3.15.1; a
    # Keras that renames or reorders them fails here before any update goes wrong.
    variables = [keras.Variable(np.zeros((2, 3), "float32")), keras.Variable(np.zeros(4))]
    adam = keras.optimizers.Adam()
    adam.build(variables)
    for field in ("_momentums", "_velocities"):
        slots = getattr(adam, field, None)
        assert slots is not None and len(slots) == 2, f"keras {keras.__version__}: {field}"
        for variable, slot in zip(variables, slots):
            assert tuple(slot.shape) == tuple(variable.shape)
    assert [adam._get_variable_index(v) for v in variables] == [0, 1]
    assert "_momentums" in inspect.getsource(type(adam).update_step)


class _FullTapes(DyGAN):
    """The train step with two tapes that record every op (TensorFlow's default)."""

    def train_step(self, data):
        image, target, task = data
        with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
            losses = self.compute_losses(image, target, task, training=True)
        g_vars = self.generator.trainable_variables
        d_vars = self.discriminator.trainable_variables
        self.g_optimizer.apply_gradients(zip(g_tape.gradient(losses["g_loss"], g_vars), g_vars))
        self.d_optimizer.apply_gradients(zip(d_tape.gradient(losses["d_loss"], d_vars), d_vars))
        for name, value in losses.items():
            self.loss_trackers[name].update_state(value)
        return {name: tracker.result() for name, tracker in self.loss_trackers.items()}


def test_tapes_watching_one_network_each_step_bit_for_bit_as_full_tapes():
    # Each tape watches its own network's weights, so the D tape skips G's forward and
    # backward passes: the same gradients, in a smaller graph.
    data = tf.data.Dataset.from_tensor_slices(t2_task_batch(2, SIZE, seed=3)).batch(3)
    keras.utils.set_random_seed(0)
    initial = [w for net in build_networks(TINY_PATCH.model) for w in net.get_weights()]
    runs = []
    for model_class in (DyGAN, _FullTapes):
        generator, discriminator = build_networks(TINY_PATCH.model)
        gan = model_class(generator, discriminator, lambda_l1=100.0)
        gan.compile(g_optimizer=keras.optimizers.SGD(1e-2), d_optimizer=keras.optimizers.SGD(1e-2))
        generator.set_weights(initial[: len(generator.weights)])
        discriminator.set_weights(initial[len(generator.weights) :])
        history = gan.fit(data, epochs=2, verbose=0).history
        runs.append(([w for net in (generator, discriminator) for w in net.get_weights()], history))
    (ours, our_history), (theirs, their_history) = runs
    for a, b in zip(ours, theirs):
        np.testing.assert_array_equal(a, b)
    # The epochs' mean losses are not bit-stable even between two runs of the same model
    # in one process (the first epoch's g_loss moved by 1 ulp in some runs, with equal
    # weights throughout): compared to float32 rounding.
    for name, values in our_history.items():
        np.testing.assert_allclose(values, their_history[name], rtol=1e-6, err_msg=name)
    assert max(np.abs(a - b).max() for a, b in zip(ours, initial)) > 1e-4
