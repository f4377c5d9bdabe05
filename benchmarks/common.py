"""What the benchmarks share: the machine's facts, the device's name and peak memory, the
matmul peak (measured here and nowhere else), the targets every check reads, the FLOP
count of a train step, and the sizes of each `benchmarks.run` profile. No library is
imported until a function asks for it.

FLOPs of a train step are counted from the layer shapes, not profiled. Per image, a
network's forward cost F is 2 x the multiply-accumulates of its convolutions:
H_out*W_out*kh*kw*Cin*Cout for every Conv2D and DyConv2D, plus for a DyConv2D its kernel
mixing K*kh*kw*Cin*Cout, bias mixing K*Cout and routing dense (Cin+12)*K. A backward
pass costs 2F (input gradient F + weight gradient F). `DyGAN.train_step` runs G once, D
on the real pair and D once on the fake pair (shared by both losses); the D tape
back-propagates through both D passes to D's weights, the G tape through D(fake) to its
input only, then through G:

    FLOPs/step = B * (3*F_G + 3*F_D [real] + 4*F_D [fake: fwd, dX+dW, dX]) = B*(3*F_G + 7*F_D)

with B images per step. (The step scores real and fake pairs in one D call, so G's tape
also back-propagates through D's real half, ~B*F_D more executed work that this count,
the model's arithmetic, leaves out for DyGAN and pix2pix alike.) Left out: norms,
activations, pooling, upsampling, losses and the optimizer updates (O(parameters)); the
first layers' unneeded input gradients are counted (the usual 3x convention).
"""

import dataclasses
import os
import platform
import time

# The targets, one place: name -> (sense, bound); `verdict` is every check.
TARGETS = {
    "dyconv_vs_conv": ("<=", 1.15),  # DyConv2D / Conv2D time, geometric mean of the shapes
    "flop_rate_ratio": (">=", 0.8),  # DyGAN / pix2pix achieved FLOP rate (issue 12)
    "flop_rate_stretch": (">=", 0.9),  # the same, its stretch goal
    "prep_vs_load": (">=", 0.8),  # shard building / plain NIfTI loading, cases per second
    "pipeline": (">=", 20.0),  # tf.data slices/s / the slices/s a float32 DyGAN step takes
}
STEP_FLOPS_FORMULA = "B * (3*F_G + 7*F_D)"
BRATS_EPOCH_SLICES = 1400  # 280 training cases x 5 slices: one projected BraTS epoch


def verdict(name, value):
    """{"target": TARGETS[name]'s bound, "met": whether `value` is on its side}."""
    sense, bound = TARGETS[name]
    return {"target": bound, "met": bool(value <= bound if sense == "<=" else value >= bound)}


def machine():
    """The backend, its library, Keras, numpy, the device kind, the CPU's model, kind and flags
    (dygan_tf.utils.cpu), cores, Python, the load average; oneDNN's setting on
    TensorFlow, the devices on JAX."""
    import keras
    import numpy as np

    from dygan_tf.utils import backend, cpu

    name = backend.name()
    library = __import__({"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}[name])
    info = {
        "backend": name,
        "library_version": library.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "device": backend.device_kind(),
        "cpu_model": cpu.cpu_model(),
        "cpu_kind": cpu.cpu_kind(),
        "cpu_flags": sorted(f for f in cpu.cpu_flags() if f.startswith(("avx", "amx", "fma"))),
        "cpus": os.cpu_count(),
        "affinity_cores": (
            len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        ),
        "python": platform.python_version(),
        "load_average": os.getloadavg(),
    }
    if name == "jax":
        import jax

        info["devices"] = [str(d) for d in jax.devices()]
    if name == "tensorflow":
        info["onednn"] = cpu.describe_onednn()
    return info


def _tensorflow_gpu():
    import tensorflow as tf

    return "GPU:0" if tf.config.list_logical_devices("GPU") else None


def reset_peak_memory():
    """PyTorch's and TensorFlow's peak counters start again at each run; JAX's cannot."""
    import keras

    backend = keras.backend.backend()
    if backend == "torch":
        import torch

        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
    elif backend == "tensorflow" and _tensorflow_gpu():
        import tensorflow as tf

        tf.config.experimental.reset_memory_stats(_tensorflow_gpu())


def device_memory():
    """{"peak_bytes_in_use", "bytes_limit", "covers"} of the backend's first GPU, or None
    on a CPU. JAX's peak is the process's so far (its counter cannot be reset: with both
    precisions in one process the second includes the first); PyTorch's and
    TensorFlow's are this `measure` call's (reset at its start). They cover the method
    measurements and both models' states and steps, not the matmul peak's operands."""
    import keras

    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        stats = jax.devices()[0].memory_stats()
        if not stats or "peak_bytes_in_use" not in stats:
            return None
        return {
            "peak_bytes_in_use": int(stats["peak_bytes_in_use"]),
            "bytes_limit": stats.get("bytes_limit"),
            "covers": "this process so far (JAX's peak is never reset)",
        }
    if backend == "torch":
        import torch

        if not torch.cuda.is_available():
            return None
        return {
            "peak_bytes_in_use": int(torch.cuda.max_memory_allocated()),
            "bytes_limit": int(torch.cuda.get_device_properties(0).total_memory),
            "covers": "this run (torch.cuda.max_memory_allocated, reset at its start)",
        }
    device = _tensorflow_gpu()
    if device is None:
        return None
    import tensorflow as tf

    return {
        "peak_bytes_in_use": int(tf.config.experimental.get_memory_info(device)["peak"]),
        "bytes_limit": None,
        "covers": "this run (tf.config.experimental.get_memory_info, reset at its start)",
    }


def device_facts():
    """The device's name and the float32 math settings of the backend's library (TF32:
    JAX's default matmul precision is None, which is TF32 on NVIDIA GPUs since Ampere;
    PyTorch's and TensorFlow's switches are recorded as they are, not changed)."""
    import keras

    backend = keras.backend.backend()
    facts = {"device_name": None, "float32_settings": {}}
    if backend == "jax":
        import jax

        device = jax.devices()[0]
        facts["device_name"] = device.device_kind
        facts["jax_platform"] = device.platform
        facts["float32_settings"] = {
            "jax_default_matmul_precision": jax.config.jax_default_matmul_precision
        }
    elif backend == "torch":
        import torch

        cuda = torch.cuda.is_available()
        facts["device_name"] = torch.cuda.get_device_name(0) if cuda else "cpu"
        facts["torch_cuda"] = torch.version.cuda
        facts["float32_settings"] = {
            "torch.backends.cuda.matmul.allow_tf32": torch.backends.cuda.matmul.allow_tf32,
            "torch.backends.cudnn.allow_tf32": torch.backends.cudnn.allow_tf32,
            "torch.get_float32_matmul_precision": torch.get_float32_matmul_precision(),
        }
    else:
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        facts["device_name"] = (
            tf.config.experimental.get_device_details(gpus[0]).get("device_name") if gpus else "cpu"
        )
        facts["float32_settings"] = {
            "tf.config.experimental.tensor_float_32_execution_enabled": (
                tf.config.experimental.tensor_float_32_execution_enabled()
            )
        }
    return facts


def matmul_peak(dtype, n=None, repeats=5):
    """Best-of-`repeats` GFLOP/s (2 n^3 FLOPs a product) of an n x n matmul in `dtype` on
    the backend's device (n: 8192 on a GPU, else 1024): the one matmul peak."""
    import keras

    from dygan_tf.utils import backend

    n = n or (8192 if backend.device_kind() == "gpu" else 1024)
    a = keras.random.normal((n, n), dtype=dtype, seed=1)
    b = keras.random.normal((n, n), dtype=dtype, seed=2)
    if keras.backend.backend() == "jax":
        import jax

        matmul, wait = jax.jit(lambda x, y: x @ y), jax.block_until_ready
    else:
        matmul = keras.ops.matmul

        def wait(x):
            return keras.ops.convert_to_numpy(x[:1, :1])

    wait(matmul(a, b))  # tracing and first allocation are not throughput
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        wait(matmul(a, b))
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def alternate(runs, rounds, steps):
    """({name: [seconds]}, {name: last return value}) of the zero-argument callables
    `runs` ({name: run}) timed in `rounds` alternating rounds of `steps` calls each, so
    that a change of the machine's load hits them all alike."""
    times, last = {name: [] for name in runs}, {}
    for _ in range(rounds):
        for name, run in runs.items():
            for _ in range(steps):
                t0 = time.perf_counter()
                last[name] = run()
                times[name].append(time.perf_counter() - t0)
    return times, last


def forward_macs(model):
    """Per-image multiply-accumulates of `model`'s convolutions: {"conv", "mixing"}."""
    import keras

    from dygan_tf.config.tasks import NUM_TASKS
    from dygan_tf.layers.dyconv import DyConv2D
    from dygan_tf.models.dygan import leaf_layers

    conv = mixing = 0
    for layer in leaf_layers(model):
        if isinstance(layer, DyConv2D):
            experts, kh, kw, cin, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            conv += height * width * kh * kw * cin * cout
            mixing += experts * kh * kw * cin * cout + (cin + NUM_TASKS) * experts
            mixing += experts * cout if layer.use_bias else 0
        elif isinstance(layer, keras.layers.Conv2D):
            kh, kw, cin_per_group, cout = layer.kernel.shape
            _, height, width, _ = layer.output.shape
            conv += height * width * kh * kw * cin_per_group * cout
    return {"conv": int(conv), "mixing": int(mixing)}


def step_flops(generator, discriminator, images):
    """FLOPs of one train step on `images` images (the formula in the module docstring)."""
    g, d = forward_macs(generator), forward_macs(discriminator)
    f_g, f_d = 2 * sum(g.values()), 2 * sum(d.values())
    per_step = images * (3 * f_g + 7 * f_d)
    mixing = images * (3 * 2 * g["mixing"] + 7 * 2 * d["mixing"])
    return {
        "formula": STEP_FLOPS_FORMULA,
        "images": images,
        "generator_forward_per_image": f_g,
        "discriminator_forward_per_image": f_d,
        "per_step": int(per_step),
        "dyconv_mixing_share": mixing / per_step,
    }


def dyconv_choices(model):
    """{layer name: {"method", "source"}} of every DyConv2D in `model`: which way each
    runs and where that choice came from (layer argument, dense_map rule, table, ...)."""
    from dygan_tf.layers.dyconv import DyConv2D
    from dygan_tf.models.dygan import leaf_layers

    choices = {}
    for layer in leaf_layers(model):
        if isinstance(layer, DyConv2D):
            inputs = layer.input
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            method, source = layer.conv_method_choice(x.shape)
            choices[f"{model.name}/{layer.name}"] = {"method": method, "source": source}
    return choices


def describe_step(config, gan, images):
    """What a step benchmark built: the config's model and precision, the sizes, the
    step's FLOPs on `images` images, the DyConv methods."""
    model = config.model
    return {
        "preset": config.preset,
        "mixed_precision": config.train.mixed_precision,
        "jit_compile": bool(gan.jit_compile),
        "dyconv": model.dyconv,
        "discriminator": model.discriminator,
        "d_dyconv": model.d_dyconv,
        "image_size": model.image_size,
        "images_per_step": images,
        "generator_params": int(gan.generator.count_params()),
        "discriminator_params": int(gan.discriminator.count_params()),
        "flops": step_flops(gan.generator, gan.discriminator, images),
        "dyconv_methods": {**dyconv_choices(gan.generator), **dyconv_choices(gan.discriminator)},
    }


@dataclasses.dataclass(frozen=True)
class Sizes:
    """How big a `benchmarks.run` is: every knob that sets how long it takes."""

    profile: str
    matmul_n: int
    matmul_repeats: int
    dyconv_quick: bool
    dyconv_batches: tuple
    dyconv_shapes: tuple = None  # None: dyconv_bench's paper shapes (halved if quick)
    preset: str = "paper"
    depth: int = None  # None: the preset's U-Net depth; smaller traces faster
    rounds: int = 1  # train steps: alternating rounds of `steps` steps per model
    steps: int = 2
    warmup: int = 1
    data_cases: int = 8
    data_image_size: int = 256
    data_elements: int = 300
    data_workers: int = None  # None: every core
    brats_root: str = None  # None: a fresh phantom of data_cases cases
    inference_preset: str = "demo"
    inference_shape: tuple = (240, 240, 155)
    inference_batch: int = 4
    inference_repeats: int = 20


PROFILES = {
    "full": Sizes("full", 2048, 5, False, (3, 12)),
    "quick": Sizes(
        "quick",
        1024,
        3,
        True,
        (3, 12),
        preset="demo",
        rounds=3,
        steps=1,
        warmup=1,
        data_cases=4,
        data_image_size=64,
        data_elements=100,
        inference_shape=(240, 240, 24),
        inference_repeats=5,
    ),
    # --gpu: the paper's sizes in one short lease (backend_step's GPU profile).
    "gpu": Sizes("gpu", 8192, 5, False, (3, 12), preset="paper", rounds=4, steps=5, warmup=2),
    "tiny": Sizes(
        "tiny",
        128,
        2,
        True,
        (3,),
        dyconv_shapes=((16, 8),),
        preset="tiny",
        depth=1,
        steps=1,
        warmup=1,
        data_cases=2,
        data_image_size=32,
        data_elements=5,
        data_workers=2,
        inference_preset="tiny",
        inference_shape=(48, 40, 12),
        inference_repeats=2,
    ),
}
