"""DyGAN's train and test steps on every backend: how each takes and applies the two
networks' gradients.

The losses are `DyGAN.compute_losses` (`losses.py`), the same `keras.ops` code on every
backend; only how the two networks' gradients are taken and applied differs:
- TensorFlow: two gradient tapes, each watching its own network's weights only, so it
  records just the ops on a path from them (the D tape skips G's forward pass, the G
  tape D's pass on real images). Under a tf.distribute strategy each replica's mean is
  divided by the replicas, since Keras sums the replicas' gradients.
- JAX: Keras's JAX trainer passes the whole state in and takes it back out (stateless).
  The step maps every variable to its value in a `StatelessScope`, runs the losses once
  under `jax.vjp` with respect to (G's weights, D's weights), pulls back G's objective to
  G's weights and D's objective to D's weights (under jit the unused halves of each
  pull-back are never computed), and applies each optimizer's `stateless_apply` to its own
  slice of the optimizer state. float16 loss scaling is each `LossScaleOptimizer`'s own;
  the `--ema` average is updated inside G's `stateless_apply`. Several devices through
  `keras.distribution.DataParallel` need nothing here: the losses are means over the
  global batch and XLA inserts the cross-device sums.
- PyTorch: stateful like TensorFlow, with `torch.autograd.grad` for each network.
"""

import keras
from keras import ops

from dygan_tf.models.losses import LOSS_NAMES, scaled
from dygan_tf.utils import backend


def train_step(gan, *args):
    """One step on both networks: Keras passes `data`; on JAX `state, data`."""
    if backend.is_jax():
        return jax_train_step(gan, *args)
    if backend.is_torch():
        return torch_train_step(gan, *args)
    return tensorflow_train_step(gan, *args)


def test_step(gan, *args):
    """Validation on one batch: Keras passes `data`; on JAX `state, data`."""
    if backend.is_jax():
        return jax_test_step(gan, *args)
    (data,) = args
    for name, value in gan.evaluation_terms(*data).items():
        gan.eval_trackers[name].update_state(value)
    return {name: tracker.result() for name, tracker in gan.eval_trackers.items()}


def tensorflow_train_step(gan, data):
    """One DyGAN step on TensorFlow (inside Keras's compiled train function)."""
    losses, g_grads, d_grads = tensorflow_gradients(gan, data)
    gan.g_optimizer.apply_gradients(zip(g_grads, gan.generator.trainable_variables))
    gan.d_optimizer.apply_gradients(zip(d_grads, gan.discriminator.trainable_variables))
    for name in LOSS_NAMES:
        gan.loss_trackers[name].update_state(losses[name])
    return {name: tracker.result() for name, tracker in gan.loss_trackers.items()}


def tensorflow_gradients(gan, data):
    """`(losses, G's gradients, D's gradients)` of one batch on TensorFlow, each
    gradient list in its network's `trainable_variables` order (loss-scaled where the
    optimizer scales)."""
    import tensorflow as tf

    image, target, task = data
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    g_vars = gan.generator.trainable_variables
    d_vars = gan.discriminator.trainable_variables
    g_tape = tf.GradientTape(watch_accessed_variables=False)
    d_tape = tf.GradientTape(watch_accessed_variables=False)
    with g_tape, d_tape:
        g_tape.watch([v.value for v in g_vars])  # the backend (tf) variables
        d_tape.watch([v.value for v in d_vars])
        losses = gan.compute_losses(image, target, task, training=True)
        # Replica gradients are summed: scale each replica's mean by 1/replicas so the
        # sum is the gradient of the mean over the global batch.
        g_objective = scaled(gan.g_optimizer, losses["g_loss"] / replicas)
        d_objective = scaled(gan.d_optimizer, losses["d_loss"] / replicas)
    g_grads = g_tape.gradient(g_objective, g_vars)
    d_grads = d_tape.gradient(d_objective, d_vars)
    return losses, g_grads, d_grads


class OptimizerPair:
    """What Keras's JAX trainer reads as `model.optimizer`: the variables of both
    optimizers, G's first (the trainer passes their values to the step and back)."""

    built = True

    def __init__(self, g_optimizer, d_optimizer):
        self.g_optimizer = g_optimizer
        self.d_optimizer = d_optimizer

    @property
    def variables(self):
        return list(self.g_optimizer.variables) + list(self.d_optimizer.variables)

    @property
    def iterations(self):
        return self.g_optimizer.iterations


def _positions(variables, subset):
    where = {id(v): i for i, v in enumerate(variables)}
    return [where[id(v)] for v in subset]


def _jax_layout(gan):
    """Where each network's variables and each tracker's variables sit in the state."""
    layout = getattr(gan, "_backend_layout", None)
    if layout is None:
        trainable, non_trainable = gan.trainable_variables, gan.non_trainable_variables
        layout = {
            "g": _positions(trainable, gan.generator.trainable_variables),
            "d": _positions(trainable, gan.discriminator.trainable_variables),
            "g_optimizer": len(gan.g_optimizer.variables),
            "metrics": {},
        }
        metrics_variables = gan.metrics_variables
        for tracker in gan.metrics:
            layout["metrics"][tracker.name] = _positions(metrics_variables, tracker.variables)
        layout["non_trainable"] = non_trainable
        gan._backend_layout = layout
    return layout


def _update_trackers(gan, trackers, values, metrics_variables, layout):
    metrics_variables = list(metrics_variables)
    logs = {}
    for name, tracker in trackers.items():
        slots = layout["metrics"][name]
        state = tracker.stateless_update_state([metrics_variables[i] for i in slots], values[name])
        for i, value in zip(slots, state):
            metrics_variables[i] = value
        logs[name] = tracker.stateless_result(state)
    return logs, metrics_variables


def jax_train_step(gan, state, data):
    """One stateless DyGAN step: `(logs, new state)` as Keras's JAX trainer expects."""
    trainable, non_trainable, optimizer_variables, metrics_variables = state
    layout = _jax_layout(gan)
    split = layout["g_optimizer"]
    g_opt_values, d_opt_values = optimizer_variables[:split], optimizer_variables[split:]
    losses, g_grads, d_grads, non_trainable = jax_gradients(
        gan, trainable, non_trainable, optimizer_variables, data
    )
    g_values = [trainable[i] for i in layout["g"]]
    d_values = [trainable[i] for i in layout["d"]]
    g_values, g_opt_values = gan.g_optimizer.stateless_apply(g_opt_values, g_grads, g_values)
    d_values, d_opt_values = gan.d_optimizer.stateless_apply(d_opt_values, d_grads, d_values)
    trainable = _placed(trainable, layout, g_values, d_values)
    logs, metrics_variables = _update_trackers(
        gan, gan.loss_trackers, losses, metrics_variables, layout
    )
    optimizer_variables = list(g_opt_values) + list(d_opt_values)
    return logs, (trainable, non_trainable, optimizer_variables, metrics_variables)


def jax_gradients(gan, trainable, non_trainable, optimizer_variables, data):
    """`(losses, G's gradients, D's gradients, new non-trainable values)` of one batch:
    the losses run once under `jax.vjp` with respect to both networks' weights, and
    each objective is pulled back to its own network only."""
    import jax

    layout = _jax_layout(gan)
    image, target, task = data
    g_opt, d_opt = gan.g_optimizer, gan.d_optimizer
    split = layout["g_optimizer"]
    scale_mapping = list(zip(g_opt.variables, optimizer_variables[:split]))
    scale_mapping += list(zip(d_opt.variables, optimizer_variables[split:]))
    model_variables = gan.trainable_variables

    def objectives(g_values, d_values):
        mapping = list(zip(model_variables, _placed(trainable, layout, g_values, d_values)))
        mapping += list(zip(layout["non_trainable"], non_trainable))
        with keras.StatelessScope(state_mapping=mapping + scale_mapping) as scope:
            losses = gan.compute_losses(image, target, task, training=True)
            g_objective = scaled(g_opt, losses["g_loss"])
            d_objective = scaled(d_opt, losses["d_loss"])
        new_non_trainable = [scope.get_current_value(v) for v in layout["non_trainable"]]
        return (g_objective, d_objective), (losses, new_non_trainable)

    g_values = [trainable[i] for i in layout["g"]]
    d_values = [trainable[i] for i in layout["d"]]
    (g_objective, d_objective), pull_back, (losses, non_trainable) = jax.vjp(
        objectives, g_values, d_values, has_aux=True
    )
    one, zero = ops.ones_like(g_objective), ops.zeros_like(g_objective)
    g_grads = pull_back((one, zero))[0]
    d_grads = pull_back((zero, one))[1]
    return losses, g_grads, d_grads, non_trainable


def _placed(trainable, layout, g_values, d_values):
    """`trainable` with G's and D's slices replaced by `g_values` and `d_values`."""
    values = list(trainable)
    for i, value in zip(layout["g"], g_values):
        values[i] = value
    for i, value in zip(layout["d"], d_values):
        values[i] = value
    return values


def jax_test_step(gan, state, data):
    """The stateless test step: L1, PSNR and SSIM of G's output, as `DyGAN.test_step`."""
    trainable, non_trainable, metrics_variables = state
    layout = _jax_layout(gan)
    mapping = list(zip(gan.trainable_variables, trainable))
    mapping += list(zip(layout["non_trainable"], non_trainable))
    with keras.StatelessScope(state_mapping=mapping):
        values = gan.evaluation_terms(*data)
    logs, metrics_variables = _update_trackers(
        gan, gan.eval_trackers, values, metrics_variables, layout
    )
    return logs, (trainable, non_trainable, metrics_variables)


def torch_train_step(gan, data):
    """One DyGAN step on PyTorch: each network's gradient of its own objective."""
    import torch

    losses, g_grads, d_grads = torch_gradients(gan, data)
    with torch.no_grad():
        gan.g_optimizer.apply_gradients(zip(g_grads, gan.generator.trainable_variables))
        gan.d_optimizer.apply_gradients(zip(d_grads, gan.discriminator.trainable_variables))
    for name in LOSS_NAMES:
        gan.loss_trackers[name].update_state(losses[name].detach())
    return {name: tracker.result() for name, tracker in gan.loss_trackers.items()}


def torch_gradients(gan, data):
    """`(losses, G's gradients, D's gradients)` of one batch on PyTorch: one forward
    pass, then `torch.autograd.grad` of each objective to its own network's weights."""
    import torch

    image, target, task = data
    g_vars = gan.generator.trainable_variables
    d_vars = gan.discriminator.trainable_variables
    losses = gan.compute_losses(image, target, task, training=True)
    g_objective = scaled(gan.g_optimizer, losses["g_loss"])
    d_objective = scaled(gan.d_optimizer, losses["d_loss"])
    g_grads = torch.autograd.grad(g_objective, [v.value for v in g_vars], retain_graph=True)
    d_grads = torch.autograd.grad(d_objective, [v.value for v in d_vars])
    return losses, list(g_grads), list(d_grads)
