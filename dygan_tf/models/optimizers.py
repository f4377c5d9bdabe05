"""The optimizers of a DyGAN run: Adam with the learning-rate schedule of the method
(docs/method.md), and an Adam whose per-step scalars are built once per step.
"""

import keras


def learning_rate_schedule(train, steps_per_epoch):
    """Adam's rate times lr_decay once per epoch (staircase), as in docs/method.md."""
    return keras.optimizers.schedules.ExponentialDecay(
        train.lr,
        decay_steps=max(1, int(steps_per_epoch)),
        decay_rate=train.lr_decay,
        staircase=True,
    )


@keras.saving.register_keras_serializable(package="dygan_tf")
class Adam(keras.optimizers.Adam):
    """`keras.optimizers.Adam` whose per-step scalars are built once per step.

    Keras's Adam builds the step's bias-corrected rate `lr * sqrt(1 - beta_2^t) /
    (1 - beta_1^t)` and the constants `1 - beta_1`, `1 - beta_2`, `epsilon` again for
    every variable it updates. Here they are built once per `apply` and shared: the same
    operations on the same values, so every update is bit for bit Keras's (tested), in
    about half the optimizer's graph. A train step of the `tiny` preset then has ~1/8
    fewer operations, which is what tracing and optimising it costs. amsgrad is not
    supported.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.amsgrad:
            raise ValueError("dygan_tf.models.optimizers.Adam does not support amsgrad=True.")
        self._step_scalars = None

    def apply(self, grads, trainable_variables=None):
        self._step_scalars = {}  # dtype -> (alpha, 1 - beta_1, 1 - beta_2, epsilon)
        try:
            return super().apply(grads, trainable_variables)
        finally:
            self._step_scalars = None  # tensors of this step (graph) only

    def _scalars(self, learning_rate, dtype):
        cache = self._step_scalars if self._step_scalars is not None else {}  # outside apply
        if dtype not in cache:
            ops = keras.ops
            lr = ops.cast(learning_rate, dtype)
            local_step = ops.cast(self.iterations + 1, dtype)
            beta_1_power = ops.power(ops.cast(self.beta_1, dtype), local_step)
            beta_2_power = ops.power(ops.cast(self.beta_2, dtype), local_step)
            alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
            constants = (1 - self.beta_1, 1 - self.beta_2, self.epsilon)
            cache[dtype] = (alpha, *(ops.cast(c, dtype) for c in constants))
        return cache[dtype]

    def update_step(self, gradient, variable, learning_rate):
        ops = keras.ops
        alpha, one_minus_beta_1, one_minus_beta_2, epsilon = self._scalars(
            learning_rate, variable.dtype
        )
        gradient = ops.cast(gradient, variable.dtype)
        m = self._momentums[self._get_variable_index(variable)]
        v = self._velocities[self._get_variable_index(variable)]
        self.assign_add(m, ops.multiply(ops.subtract(gradient, m), one_minus_beta_1))
        self.assign_add(v, ops.multiply(ops.subtract(ops.square(gradient), v), one_minus_beta_2))
        self.assign_sub(variable, ops.divide(ops.multiply(m, alpha), ops.add(ops.sqrt(v), epsilon)))


def make_optimizer(train, steps_per_epoch, name, average=False):
    """Adam with docs/method.md's schedule; `average`: it also keeps a moving average of the
    weights it updates (momentum `train.ema`; Keras's `use_ema`)."""
    ema = dict(use_ema=True, ema_momentum=train.ema) if average and train.ema > 0 else {}
    return Adam(
        learning_rate=learning_rate_schedule(train, steps_per_epoch),
        beta_1=train.beta_1,
        name=name,
        **ema,
    )
