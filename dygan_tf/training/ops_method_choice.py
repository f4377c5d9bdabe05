"""DyConv methods measured where JAX (or PyTorch) trains, before the step is compiled.

On TensorFlow the methods come from its measured table (`training.method_choice`). On
the other backends every "auto" layer that the dense_map rule does not take times the
backend-neutral methods (`layers.dyconv_ops`) forward and backward at its real input
shape on the device it runs on, through `utils.method_cache`: measured on first use on a
machine, read from the user's cache folder afterwards, within the measuring budget
(then, or with DYGAN_MEASURE_METHODS=0, the backend's default: a loop of dense
convolutions on a CPU, one grouped convolution on a GPU).
"""

import keras
import numpy as np

from dygan_tf.layers.dyconv import DyConv2D, _default_device, default_ops_method
from dygan_tf.layers.dyconv_ops import OPS_METHODS, dense_map_applies, ops_dynamic_conv2d
from dygan_tf.models.dygan import leaf_layers
from dygan_tf.utils import method_cache

FAMILY = "dyconv_ops"
CANDIDATES = tuple(m for m in OPS_METHODS if m != "dense_map")


def auto_layer_shapes(gan, batch_size):
    """[(layer, input shape with its batch)] of the "auto" DyConv2D layers that measure:
    G's at `batch_size` rows, D's at twice that (real and fake pairs in one call)."""
    stacked = gan.stack_discriminator_calls and not gan._discriminator_mixes_examples
    found = []
    for network, rows in (
        (gan.generator, batch_size),
        (gan.discriminator, 2 * batch_size if stacked else batch_size),
    ):
        for layer in leaf_layers(network):
            if isinstance(layer, DyConv2D) and layer.conv_method == "auto":
                inputs = layer.input
                x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
                shape = (rows, *x.shape[1:])
                if not dense_map_applies(
                    shape[1:3], layer.kernel_size, layer.strides[0], layer.padding
                ):
                    found.append((layer, shape))
    return found


def _candidate(layer, shape, method):
    """A callable running `method`'s forward and backward once at `shape` (JAX: jitted)."""
    k, (kh, kw) = layer.num_experts, layer.kernel_size
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(layer.compute_dtype)
    alpha = rng.uniform(0, 1, (shape[0], k)).astype(layer.compute_dtype)
    experts = rng.standard_normal((k, kh, kw, shape[-1], layer.filters)).astype(layer.compute_dtype)
    stride, padding = layer.strides[0], layer.padding
    if keras.backend.backend() == "jax":
        import jax

        def loss(x, alpha, experts):
            return ops_dynamic_conv2d(x, alpha, experts, stride, padding, method).sum()

        grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
        return lambda: jax.block_until_ready(grad(x, alpha, experts))
    import torch

    tensors = [torch.tensor(v, requires_grad=True) for v in (x, alpha, experts)]

    def run():
        out = ops_dynamic_conv2d(*tensors, stride, padding, method).sum()
        return torch.autograd.grad(out, tensors)

    return run


def choose_ops_methods(gan, batch_size):
    """Sets `measured_choice` on every measuring layer; returns {layer name: (method,
    source)}."""
    device = _default_device()
    default = default_ops_method()[0]
    chosen = {}
    for layer, shape in auto_layer_shapes(gan, batch_size):
        key = (
            *shape,
            layer.filters,
            *layer.kernel_size,
            layer.strides[0],
            layer.padding,
            layer.num_experts,
            layer.compute_dtype,
        )
        candidates = {m: _candidate(layer, shape, m) for m in CANDIDATES}
        layer.measured_choice = method_cache.choose(FAMILY, key, candidates, default, device)
        chosen[layer.path] = layer.measured_choice
    return chosen
