"""Which method (`dyconv_methods.METHODS`) each DyConv2D runs: the one dispatch.

An "auto" layer's method, in this order (as MONAI picks fast paths through one factory
with a fallback):

1. the rule: "dense_map" where the kernel covers most of a tiny map
   (`dyconv_methods.dense_map_applies`), whatever the backend;
2. the shipped table of the backend and device kind (`shipped_method`): on a CPU with
   TensorFlow, `TENSORFLOW_CPU_TABLE` (the nearest measured shape); on a CPU with JAX or
   PyTorch, a loop of dense convolutions (XLA's CPU grouped convolution measured ~18x
   slower: docs/design.md); on any GPU, one grouped convolution (native there);
3. a measurement on this machine, where one exists: `measure` times the candidates at the
   layer's real input shape, forward and backward, and keeps the fastest in the
   per-machine cache (`dygan_tf.utils.method_cache`; the key holds `VERSION`, so entries
   of an older dispatch are measured again). It runs by default where no table was
   measured for the machine (JAX, PyTorch, GPUs); on a TensorFlow CPU the table stands
   unless DYGAN_MEASURE_METHODS=1 (measuring there gained 1-4 %, within the spread of
   the timings). It stays because it earns 20 % of a JAX CPU step over the loop
   (docs/results/performance.md, "Method choice measured in the step").
"""

import math

import numpy as np

from dygan_tf.layers import dyconv_methods
from dygan_tf.utils import backend, method_cache

# The version of this dispatch, part of every cached measurement's key.
VERSION = 2
FAMILY = "dyconv"

# (out_h * out_w, in channels, filters, kernel size, stride) -> fastest method, measured
# on a 2-core AVX-512 EPYC with oneDNN on: benchmarks/results/dyconv_dispatch_cpu.json
# (regenerate with `python -m benchmarks.dyconv_bench --dispatch --print-table`). Demo shapes
# first, then the paper's; generator rows at batch 3, discriminator rows at batch 6.
TENSORFLOW_CPU_TABLE = {
    (256, 192, 64, 3, 1): "loop",
    (256, 64, 64, 3, 1): "loop",
    (1024, 96, 32, 3, 1): "loop",
    (1024, 32, 32, 3, 1): "grouped",
    (4096, 48, 16, 3, 1): "loop",
    (4096, 16, 16, 3, 1): "loop",
    (4096, 16, 1, 1, 1): "grouped",
    (1024, 2, 16, 4, 2): "grouped",
    (256, 16, 32, 4, 2): "grouped",
    (64, 32, 64, 4, 2): "stacked_inputs",
    (16, 64, 128, 4, 2): "stacked_inputs",
    (4, 128, 128, 4, 2): "stacked_outputs",
    (16, 128, 256, 4, 1): "patches",
    (4, 128, 256, 4, 1): "stacked_inputs",
    (64, 64, 128, 4, 1): "grouped",
    (1024, 1536, 512, 3, 1): "loop",
    (1024, 512, 512, 3, 1): "loop",
    (4096, 768, 256, 3, 1): "loop",
    (4096, 256, 256, 3, 1): "loop",
    (16384, 384, 128, 3, 1): "loop",
    (16384, 128, 128, 3, 1): "loop",
    (65536, 192, 64, 3, 1): "loop",
    (65536, 64, 64, 3, 1): "loop",
    (65536, 64, 1, 1, 1): "patches",
    (16384, 2, 64, 4, 2): "loop",
    (4096, 64, 128, 4, 2): "loop",
    (1024, 128, 256, 4, 2): "loop",
    (256, 256, 512, 4, 2): "loop",
    (64, 512, 512, 4, 2): "patches",
    (256, 512, 1024, 4, 1): "patches",
    (64, 512, 1024, 4, 1): "patches",
    (1024, 256, 512, 4, 1): "loop",
}
# Methods whose intermediate tensor would exceed this are not measured at a shape.
MAX_INTERMEDIATE_MB = 512


def choose(layer, x_shape):
    """`(method, where the choice came from)` for `layer` on inputs of `x_shape`:
    "layer argument", "dense_map rule", a measurement (`layer.measured_choice`, set by
    `measure`), or the shipped table's answer."""
    if layer.conv_method != "auto":
        return layer.conv_method, "layer argument"
    if dyconv_methods.dense_map_applies(
        x_shape[1:3], layer.kernel_size, layer.strides[0], layer.padding
    ):
        return "dense_map", "dense_map rule"
    if layer.measured_choice is not None:
        return layer.measured_choice
    return shipped_method(layer, x_shape)


def shipped_method(layer, x_shape, table=None):
    """`(method, source)` of the shipped table for this backend and device kind."""
    device = backend.device_kind()
    if device == "gpu":
        return "grouped", f"{backend.name()} default (gpu)"
    if not backend.is_tensorflow():
        return "loop", f"{backend.name()} default (cpu)"
    _, out_h, out_w, _ = layer.compute_output_shape(x_shape)
    return table_method(
        (out_h * out_w, layer.in_channels, layer.filters, layer.kernel_size[0], layer.strides[0]),
        table,
    )


def table_method(key, table=None):
    """`(method, source)` of `TENSORFLOW_CPU_TABLE` (or `table`) for `key` = (out pixels,
    in channels, filters, kernel size, stride): its entry ("table"), else the nearest
    measured shape's ("nearest table shape")."""
    table = TENSORFLOW_CPU_TABLE if table is None else table
    if key in table:
        return table[key], "table"
    out_pixels, channels, filters, kernel_size, stride = key

    def distance(other):
        pixels, c, f, k, s = other
        return (
            abs(math.log(pixels / out_pixels))
            + abs(math.log(c / channels))
            + abs(math.log(f / filters))
            + abs(math.log(k / kernel_size))
            + (0.5 if s != stride else 0.0)
        )

    return table[min(table, key=distance)], "nearest table shape"


def measuring_default():
    """Whether `measure` measures when DYGAN_MEASURE_METHODS does not say: where no table
    was measured for the machine (JAX, PyTorch, GPUs), not on a TensorFlow CPU."""
    return not (backend.is_tensorflow() and backend.device_kind() == "cpu")


def candidates_for(layer, shape):
    """The methods worth timing for `layer` at input `shape` (batch included): every
    method except "dense_map" (the rule's), without those needing a static batch where it
    is unknown, and without those whose largest intermediate exceeds
    MAX_INTERMEDIATE_MB."""
    batch, height, width, channels = shape
    k, (kh, kw), filters = layer.num_experts, layer.kernel_size, layer.filters
    _, out_h, out_w, _ = layer.compute_output_shape(shape)
    itemsize = np.dtype(layer.compute_dtype).itemsize
    sizes = {
        "patches": batch * out_h * out_w * kh * kw * channels,
        "stacked_inputs": batch * height * width * k * channels,
        "stacked_outputs": batch * out_h * out_w * k * filters,
    }
    found = []
    for method in dyconv_methods.METHODS:
        if method == "dense_map":
            continue
        if sizes.get(method, 0) * itemsize > MAX_INTERMEDIATE_MB * 2**20:
            continue
        found.append(method)
    return tuple(found)


def measure(layers_and_shapes, by_default=None):
    """Sets `measured_choice` on each "auto" layer of `[(layer, input shape with its
    batch)]` that the rule does not take, from the per-machine cache or a measurement;
    returns {layer path: (method, source)}.

    Whether it measures: `method_cache.set_measuring`'s setting, else
    DYGAN_MEASURE_METHODS's, else `by_default` (None: `measuring_default()`)."""
    device = backend.device_kind()
    default_on = measuring_default() if by_default is None else by_default
    chosen = {}
    for layer, shape in layers_and_shapes:
        if layer.conv_method != "auto" or dyconv_methods.dense_map_applies(
            shape[1:3], layer.kernel_size, layer.strides[0], layer.padding
        ):
            continue
        default = shipped_method(layer, shape)[0]
        if not method_cache.measuring_enabled(default_on):
            layer.measured_choice = (default, method_cache.OFF)
            chosen[layer.path] = layer.measured_choice
            continue
        candidates = {m: _runner(layer, shape, m) for m in candidates_for(layer, shape)}
        layer.measured_choice = method_cache.choose(
            FAMILY, cache_key(layer, shape), candidates, default, device, version=VERSION
        )
        chosen[layer.path] = layer.measured_choice
    return chosen


def cache_key(layer, shape):
    """What a measurement of `layer` at input `shape` depends on besides the machine."""
    return (
        *shape,
        layer.filters,
        *layer.kernel_size,
        layer.strides[0],
        layer.padding,
        layer.num_experts,
        layer.compute_dtype,
    )


def _runner(layer, shape, method):
    """A callable running `method`'s forward and backward once at `shape`, compiled as
    the backend's train step runs it."""
    k, (kh, kw) = layer.num_experts, layer.kernel_size
    rng = np.random.default_rng(0)
    dtype = layer.compute_dtype
    x = rng.standard_normal(shape).astype(dtype)
    alpha = rng.uniform(0, 1, (shape[0], k)).astype(dtype)
    experts = rng.standard_normal((k, kh, kw, shape[-1], layer.filters)).astype(dtype)
    stride, padding = layer.strides[0], layer.padding

    def loss(x, alpha, experts):
        from keras import ops

        y = dyconv_methods.dynamic_conv2d(x, alpha, experts, stride, padding, method)
        return ops.sum(ops.cast(y, "float32"))

    return backend.gradient_runner(loss, (x, alpha, experts))
