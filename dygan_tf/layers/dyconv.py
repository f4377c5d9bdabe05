"""DyConv2D: a CondConv layer whose expert mixing also sees the task label.

Each example gets its own kernel `sum_k alpha_k W_k`, with
`alpha = sigmoid(dense([GAP(x), condition]))`. The layer is written once in `keras.ops`
for every backend; how the per-example convolution is computed (a method of
`dyconv_methods`, picked per layer shape by `dyconv_dispatch`) changes only the speed, so
a batch that mixes tasks needs no eager batch loop.
"""

import keras
from keras import layers, name_scope, ops

from dygan_tf.layers import dyconv_dispatch
from dygan_tf.layers.dyconv_methods import METHODS, conv_geometry, dynamic_conv2d


@keras.saving.register_keras_serializable(package="dygan_tf")
class DyConv2D(layers.Layer):
    """Dynamic 2-D convolution (CondConv) conditioned on the input and a task code.

    Each example b is convolved with its own kernel `sum_k alpha[b, k] W_k`, where
    `alpha = sigmoid(dense([GAP(x), task]))`; biases are mixed the same way. How the
    per-example convolution is computed (one of `dyconv_methods.METHODS`) changes only
    the speed: "auto" picks per layer shape (`dyconv_dispatch.choose`).

    Args:
        filters: number of output channels F.
        kernel_size: int or (kh, kw).
        strides: 1 or 2 (an int or a pair of equal ints).
        num_experts: K, the number of expert kernels mixed per example.
        padding: "same" or "valid".
        use_bias: whether each expert has a bias (mixed like the kernels).
        kernel_initializer: initializer of the expert kernels (He by default, applied to
            each expert with its own fan-in).
        bias_initializer: initializer of the expert biases.
        routing_initializer: initializer of the routing dense layer's kernel.
        conv_method: "auto" or one of `dygan_tf.layers.dyconv_methods.METHODS`.
        task_size: the length of the condition vector (12 for the task codes of
            `dygan_tf.config.tasks.task_code`, 8 for multi-source models); None: the
            length of the `task` input the layer is built with.

    Call arguments:
        x: `[B, H, W, C]`; H, W and C must be known, B may be unknown.
        task: `[B, task_size]` condition vectors, e.g. task codes.

    Output shape: `[B, H', W', F]`, with H' = ceil(H / stride) for "same" padding.

    Weights: `kernel` `[K, kh, kw, C, F]`, `bias` `[K, F]`, and the routing layer's
    `[C + task_size, K]` kernel and `[K]` bias.

    Example:

    ```python
    layer = DyConv2D(64, 3, num_experts=3)
    x = np.random.rand(3, 32, 32, 16).astype("float32")
    task = np.stack([task_code("t2", t) for t in ("flair", "t1", "t1ce")])
    y = layer(x, task)  # (3, 32, 32, 64): one kernel per example
    ```
    """

    def __init__(
        self,
        filters,
        kernel_size,
        strides=1,
        num_experts=3,
        padding="same",
        use_bias=True,
        kernel_initializer="he_normal",
        bias_initializer="zeros",
        routing_initializer="glorot_uniform",
        conv_method="auto",
        task_size=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ValueError(f"`filters` must be a positive int. Received: filters={filters}")
        self.filters = filters
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        if self.strides[0] != self.strides[1]:
            raise ValueError(f"`strides` must be equal on both axes. Received: strides={strides}")
        if not isinstance(num_experts, int) or num_experts <= 0:
            raise ValueError(
                f"`num_experts` must be a positive int. Received: num_experts={num_experts}"
            )
        self.num_experts = num_experts
        padding = str(padding).lower()
        if padding not in ("same", "valid"):
            raise ValueError(f"`padding` must be 'same' or 'valid'. Received: padding={padding}")
        self.padding = padding
        self.use_bias = bool(use_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.routing_initializer = keras.initializers.get(routing_initializer)
        if conv_method != "auto" and conv_method not in METHODS:
            raise ValueError(
                f"`conv_method` must be 'auto' or one of {METHODS}. "
                f"Received: conv_method={conv_method!r}"
            )
        self.conv_method = conv_method
        if task_size is not None and (not isinstance(task_size, int) or task_size <= 0):
            raise ValueError(
                f"`task_size` must be None or a positive int. Received: task_size={task_size}"
            )
        self.task_size = task_size
        # Set by a measurement on this machine (dyconv_dispatch.measure): the
        # `(method, source)` an "auto" layer runs; never saved with the layer.
        self.measured_choice = None
        # A sublayer does not inherit its parent's dtype policy: pass it, as Keras's own
        # composite layers do, so a per-layer `dtype="mixed_float16"` works.
        self.routing = layers.Dense(
            num_experts,
            kernel_initializer=self.routing_initializer,
            dtype=self.dtype_policy,
            name="routing",
        )

    def build(self, x_shape, task_shape=None):
        in_channels = x_shape[-1]
        if in_channels is None:
            raise ValueError(f"DyConv2D needs a known channel count. Received: x_shape={x_shape}")
        self.in_channels = int(in_channels)
        kh, kw = self.kernel_size
        # He init per expert: fan_in of one expert is kh*kw*C, as for a static conv;
        # Keras would count the expert axis as a receptive field, so init one at a time.
        self.kernel = self.add_weight(
            name="kernel",
            shape=(self.num_experts, kh, kw, self.in_channels, self.filters),
            initializer=_PerExpert(self.kernel_initializer),
        )
        if self.use_bias:
            self.bias = self.add_weight(
                name="bias",
                shape=(self.num_experts, self.filters),
                initializer=self.bias_initializer,
            )
        else:
            self.bias = None
        # The condition: 12-bit task codes, or 8 values for multi-source models.
        given = None if task_shape is None else task_shape[-1]
        if given is not None and self.task_size not in (None, int(given)):
            raise ValueError(
                f"DyConv2D was made with task_size={self.task_size} but is built with a "
                f"task input of shape {tuple(task_shape)}"
            )
        self.task_size = self.task_size if given is None else int(given)
        if self.task_size is None:
            raise ValueError(
                "DyConv2D needs the condition's length: pass `task_size` or build it with "
                f"the task input's shape. Received: task_shape={task_shape}"
            )
        self.routing.build((None, self.in_channels + self.task_size))

    def routing_weights(self, x, task):
        """alpha = sigmoid(dense(concat(GAP(x), task))), shape [B, num_experts]."""
        pooled = ops.mean(x, axis=(1, 2))
        features = ops.concatenate([pooled, ops.cast(task, pooled.dtype)], axis=-1)
        return ops.sigmoid(self.routing(features))

    def conv_method_for(self, x_shape):
        """The method this layer runs on inputs of `x_shape` (see dyconv_dispatch)."""
        return self.conv_method_choice(x_shape)[0]

    def conv_method_choice(self, x_shape):
        """`(method, where the choice came from)`: `dyconv_dispatch.choose`."""
        return dyconv_dispatch.choose(self, x_shape)

    def call(self, x, task):
        method = self.conv_method_for(x.shape)
        # The name scopes let benchmarks.profile_step split the layer's time.
        with name_scope("mixing"):
            alpha = self.routing_weights(x, task)
            kernel = ops.cast(self.kernel, self.compute_dtype)
        y = dynamic_conv2d(x, alpha, kernel, self.strides[0], self.padding, method)
        if self.use_bias:
            y = y + ops.matmul(alpha, ops.cast(self.bias, self.compute_dtype))[:, None, None, :]
        return y

    def compute_output_shape(self, x_shape, task_shape=None):
        batch, height, width = x_shape[0], x_shape[1], x_shape[2]
        return (
            batch,
            _conv_length(height, self.kernel_size[0], self.strides[0], self.padding),
            _conv_length(width, self.kernel_size[1], self.strides[1], self.padding),
            self.filters,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "filters": self.filters,
                "kernel_size": self.kernel_size,
                "strides": self.strides,
                "num_experts": self.num_experts,
                "padding": self.padding,
                "use_bias": self.use_bias,
                "kernel_initializer": keras.initializers.serialize(self.kernel_initializer),
                "bias_initializer": keras.initializers.serialize(self.bias_initializer),
                "routing_initializer": keras.initializers.serialize(self.routing_initializer),
                "conv_method": self.conv_method,
                "task_size": self.task_size,
            }
        )
        return config


@keras.saving.register_keras_serializable(package="dygan_tf")
class _PerExpert(keras.initializers.Initializer):
    """Applies a kernel initializer to each expert separately (fan-in of one expert),
    each expert with a seed of its own.

    A Keras random initializer holds one integer seed (drawn when it is made, if none
    was given) and returns the same values at every call: called once per expert, it
    would start all K experts identical, a static convolution in K copies. Expert k
    draws with the initializer's seed + k (expert 0 as the initializer alone would).
    """

    def __init__(self, initializer):
        self.initializer = keras.initializers.get(initializer)

    def __call__(self, shape, dtype=None):
        return ops.stack([self.expert(k)(shape[1:], dtype=dtype) for k in range(shape[0])])

    def expert(self, k):
        """The initializer of expert `k`."""
        seed = getattr(self.initializer, "seed", None)
        if k == 0 or not isinstance(seed, int):  # not random, or a seed generator
            return self.initializer
        config = {**self.initializer.get_config(), "seed": seed + k}
        return type(self.initializer).from_config(config)

    def get_config(self):
        return {"initializer": keras.initializers.serialize(self.initializer)}


def _pair(value, name):
    if isinstance(value, int):
        value = (value, value)
    value = tuple(value)
    if len(value) != 2 or not all(isinstance(v, int) and v > 0 for v in value):
        raise ValueError(
            f"`{name}` must be a positive int or a pair of them. Received: {name}={value}"
        )
    return value


def _conv_length(length, kernel, stride, padding):
    return None if length is None else conv_geometry(length, kernel, stride, padding)[0]
