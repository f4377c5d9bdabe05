"""DyConv2D: a CondConv layer whose expert mixing also sees the task label.

Each example gets its own kernel `sum_k alpha_k W_k`, with
`alpha = sigmoid(dense([GAP(x), task]))`. The per-example convolution runs by the method
measured fastest for the layer's shape, so a batch that mixes tasks needs no eager
batch loop. On TensorFlow the methods are dyconv_methods.py's (a grouped convolution
with a hand-written gradient, a batched matmul over patches, dense per-example
convolutions, the K experts stacked into one dense convolution, or one matmul over a
whole tiny map; imported only on that backend); on JAX and PyTorch they are
dyconv_ops.py's, in `keras.ops` only.
"""

import keras
from keras import layers, ops

from dygan_tf.config.tasks import NUM_TASKS
from dygan_tf.layers.dyconv_ops import OPS_METHODS, dense_map_applies, ops_dynamic_conv2d

# Every method name a layer may be given: TensorFlow's and the backend-neutral ones.
METHODS = ("grouped", "patches", "loop", "stacked_inputs", "stacked_outputs", "dense_map")


def _on_tensorflow():
    return keras.backend.backend() == "tensorflow"


@keras.saving.register_keras_serializable(package="dygan_tf")
class DyConv2D(layers.Layer):
    """Dynamic 2-D convolution (CondConv) conditioned on the input and a task code.

    Each example b is convolved with its own kernel `sum_k alpha[b, k] W_k`, where
    `alpha = sigmoid(dense([GAP(x), task]))`; biases are mixed the same way. How the
    per-example convolution is computed (one of `dyconv_methods.METHODS`) changes only
    the speed: "auto" picks per layer shape from a table measured on the machine.

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

    Call arguments:
        x: `[B, H, W, C]`; H, W and C must be known, B may be unknown.
        task: `[B, 12]` task codes (`dygan_tf.config.tasks.task_code`).

    Output shape: `[B, H', W', F]`, with H' = ceil(H / stride) for "same" padding.

    Weights: `kernel` `[K, kh, kw, C, F]`, `bias` `[K, F]`, and the routing layer's
    `[C + 12, K]` kernel and `[K]` bias.

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
        # Set by a measurement on this machine (dygan_tf.training.method_choice): the
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
        task_size = NUM_TASKS if task_shape is None or task_shape[-1] is None else task_shape[-1]
        self.routing.build((None, self.in_channels + int(task_size)))

    def routing_weights(self, x, task):
        """alpha = sigmoid(dense(concat(GAP(x), task))), shape [B, num_experts]."""
        if _on_tensorflow():  # TensorFlow's own reduction (ops.mean upcasts float16)
            import tensorflow as tf

            pooled = tf.reduce_mean(x, axis=(1, 2))
        else:
            pooled = ops.mean(x, axis=(1, 2))
        features = ops.concatenate([pooled, ops.cast(task, pooled.dtype)], axis=-1)
        return ops.sigmoid(self.routing(features))

    def conv_method_for(self, x_shape):
        """The method this layer runs on inputs of `x_shape` (see dyconv_methods)."""
        return self.conv_method_choice(x_shape)[0]

    def conv_method_choice(self, x_shape):
        """`(method, where the choice came from)`: "layer argument", "dense_map rule", a
        measurement on this machine (`measured_choice`), or the backend's default: on
        TensorFlow what `dyconv_methods.choose_method_with_source` says, elsewhere
        `default_ops_method`."""
        if self.conv_method != "auto":
            return self.conv_method, "layer argument"
        if dense_map_applies(x_shape[1:3], self.kernel_size, self.strides[0], self.padding):
            return "dense_map", "dense_map rule"
        if self.measured_choice is not None:
            return self.measured_choice
        if not _on_tensorflow():
            return default_ops_method()
        from dygan_tf.layers.dyconv_methods import choose_method_with_source

        _, out_h, out_w, _ = self.compute_output_shape(x_shape)
        return choose_method_with_source(
            out_h * out_w, self.in_channels, self.filters, self.kernel_size[0], self.strides[0]
        )

    def call(self, x, task):
        method = self.conv_method_for(x.shape)
        if not _on_tensorflow():
            if method not in OPS_METHODS:
                raise ValueError(
                    f"conv_method={method!r} runs on TensorFlow only; on the "
                    f"{keras.backend.backend()} backend use 'auto' or one of {OPS_METHODS}."
                )
            alpha = self.routing_weights(x, task)
            kernel = ops.cast(self.kernel, self.compute_dtype)
            y = ops_dynamic_conv2d(x, alpha, kernel, self.strides[0], self.padding, method)
            if self.use_bias:
                y = y + ops.matmul(alpha, ops.cast(self.bias, self.compute_dtype))[:, None, None, :]
            return y
        import tensorflow as tf

        from dygan_tf.layers.dyconv_methods import dynamic_conv2d

        # The name scopes let benchmarks.profile_step split the layer's time.
        with tf.name_scope("mixing"):
            alpha = self.routing_weights(x, task)
            kernel = tf.cast(self.kernel, self.compute_dtype)
        y = dynamic_conv2d(x, alpha, kernel, self.strides[0], self.padding, method)
        if self.use_bias:
            bias = tf.matmul(alpha, tf.cast(self.bias, self.compute_dtype))
            y = y + bias[:, None, None, :]
        return tf.ensure_shape(y, self.compute_output_shape(x.shape))

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


def default_ops_method():
    """`(method, source)` of an "auto" layer on JAX or PyTorch before any measurement:
    one grouped convolution on a GPU (native there), a loop of dense convolutions on a
    CPU (XLA's CPU grouped convolution measured ~18x slower: docs/design.md)."""
    device = _default_device()
    if device == "gpu":
        return "grouped", f"{keras.backend.backend()} default (gpu)"
    return "loop", f"{keras.backend.backend()} default ({device})"


def _default_device():
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        return "gpu" if jax.default_backend() in ("gpu", "cuda", "rocm") else "cpu"
    if backend == "torch":
        import torch

        return "gpu" if torch.cuda.is_available() else "cpu"
    return "cpu"


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
    if length is None:
        return None
    if padding == "same":
        return -(-length // stride)
    return (length - kernel) // stride + 1
