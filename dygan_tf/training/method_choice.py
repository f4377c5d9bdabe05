"""DyConv methods chosen on the machine that trains: each "auto" layer's methods timed at
its shape (forward + backward), then the whole train step with those choices against the
shipped table, the faster kept. Both verdicts are cached per machine
(`dygan_tf.utils.method_cache`), so later runs only read them.
"""

import contextlib
import time

import keras
import numpy as np
import tensorflow as tf

from dygan_tf.layers.dyconv import DyConv2D
from dygan_tf.layers.dyconv_methods import METHODS, dense_map_applies, dynamic_conv2d
from dygan_tf.models.dygan import leaf_layers
from dygan_tf.utils import method_cache

LAYER_FAMILY = "dyconv"
STEP_FAMILY = "dyconv_step"
# The step verdict, when the layers' measured methods lost to the shipped table in it.
TABLE_IN_STEP = "shipped table (faster in the step)"
SOURCES = method_cache.SOURCES + (TABLE_IN_STEP,)
# Methods whose intermediate tensor would exceed this are not tried at a shape.
MAX_INTERMEDIATE_MB = 512
# Train steps per timed call of the step: a median over more steps, fewer calls.
STEPS_PER_CALL = 2
# The step verdict is measured only in a process that has this share of its measuring
# budget left: it takes two traces of the step (the demo's: ~20-30 s on 2 cores), and a
# measurement once started finishes; a first run measures the layers, the next the step.
STEP_BUDGET_SHARE = 0.75
# Whether choose_methods measures when neither DYGAN_MEASURE_METHODS nor
# method_cache.set_measuring says: no. On an Intel AVX-512 CPU the demo step with the
# per-layer measured methods ran 0-3 % faster than with the shipped table, within the
# spread of the timings, for 30-50 s of measuring on 2 cores; on an AVX2 EPYC no
# whole-step variant beat the table (docs/results/performance.md).
MEASURE_BY_DEFAULT = False
# The measured methods replace the table's only if the step runs at least this much
# faster with them: smaller differences are within the spread of repeated step timings
# on a shared 2-core CPU (docs/results/performance.md), and the table is the known one.
MIN_GAIN = 0.05


def auto_layers(gan, batch_size):
    """[(name, layer, input shape with the batch, table method)] of the DyConv2D layers of
    G and D that pick their method ("auto") by the table, not by the dense_map rule.

    G sees `batch_size` rows; D twice that when the step scores real and fake pairs in one
    call (`DyGAN.compute_losses`)."""
    stacked = gan.stack_discriminator_calls and not getattr(
        gan, "_discriminator_mixes_examples", False
    )
    found = []
    d_rows = 2 * batch_size if stacked else batch_size
    for network, rows in ((gan.generator, batch_size), (gan.discriminator, d_rows)):
        for layer in leaf_layers(network):
            if not isinstance(layer, DyConv2D) or layer.conv_method != "auto":
                continue
            inputs = layer.input
            x = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
            shape = (rows, *x.shape[1:])
            if dense_map_applies(shape[1:3], layer.kernel_size, layer.strides[0], layer.padding):
                continue
            table = _table_method(layer, shape)
            found.append((f"{network.name}/{layer.name}", layer, shape, table))
    return found


def choose_methods(gan, batch_size, log=print):
    """Sets `measured_choice` on each auto DyConv2D of `gan` (see `auto_layers`) and
    returns `{"layers": {name: (method, source)}, "step": (verdict, source)}`.

    `batch_size`: the rows of one train step on one replica. Each layer's methods are
    timed (or read from the cache); when that changes any layer's method, the compiled
    train step runs with the measured methods and with the shipped table, and the faster
    is kept (verdict "measured" or "table"). The networks' and optimizers' variables are
    restored afterwards and `gan.train_function` is cleared, so `fit` traces its own step
    with the choices. Measuring off (the default here: MEASURE_BY_DEFAULT) or its budget
    spent: the shipped table, so named; DYGAN_MEASURE_METHODS=1 or
    `method_cache.set_measuring(True)` turns it on.
    """
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "choose_methods times TensorFlow's DyConv methods; other backends choose theirs "
            f"through dygan_tf.utils.method_cache. Received: backend={keras.backend.backend()!r}"
        )
    t0 = time.perf_counter()
    spent0 = method_cache.spent_seconds()
    layers = auto_layers(gan, batch_size)
    if not method_cache.measuring_enabled(default=MEASURE_BY_DEFAULT):
        choices = {}
        for name, layer, _, table in layers:
            layer.measured_choice = choices[name] = (table, method_cache.OFF)
        return {"layers": choices, "step": ("table", method_cache.OFF)}
    device = _device()
    measured = {
        name: method_cache.choose(
            LAYER_FAMILY, layer_key(layer, shape), layer_candidates(layer, shape), table, device
        )
        for name, layer, shape, table in layers
    }
    unfinished = {name for name, (_, source) in measured.items() if source in _UNFINISHED}
    changed = [name for name, _, _, table in layers if measured[name][0] != table]
    if unfinished:
        # Not every layer measured (off, or the budget ran out): the shipped table
        # throughout, since single-layer timings alone do not predict the step's.
        reason = next(measured[name][1] for name in measured if name in unfinished)
        step = ("table", reason)
    elif not changed:
        step = ("measured", "the shipped table's methods")
    elif method_cache.lookup(STEP_FAMILY, step_key(gan, batch_size, layers, measured), device):
        step = _validate_in_step(gan, batch_size, layers, measured, device)  # cached
    elif method_cache.budget_seconds() - method_cache.spent_seconds() < (
        STEP_BUDGET_SHARE * method_cache.budget_seconds()
    ):
        step = ("table", method_cache.SPENT)
    else:
        step = _validate_in_step(gan, batch_size, layers, measured, device)
    choices = {}
    for name, layer, _, table in layers:
        choice = measured[name]
        if name in unfinished:
            pass
        elif unfinished:
            choice = (table, step[1])
        elif step[0] != "measured" and name in changed:
            choice = (table, TABLE_IN_STEP if step[1] in _FINISHED else step[1])
        layer.measured_choice = choice
        choices[name] = choice
    if layers:
        log(
            f"DyConv methods: {len(changed)} of {len(layers)} layers measured faster with "
            f"another method than the shipped table's; in the step: {step[0]} ({step[1]}); "
            f"{method_cache.spent_seconds() - spent0:.1f} s measuring, "
            f"{time.perf_counter() - t0:.1f} s in all"
        )
    return {"layers": choices, "step": step}


_FINISHED = (method_cache.MEASURED, method_cache.CACHED)
_UNFINISHED = (method_cache.OFF, method_cache.SPENT)


def _validate_in_step(gan, batch_size, layers, measured, device):
    """("measured" | "table", source): the faster assignment in the compiled train step."""
    table = {name: (method, "table") for name, _, _, method in layers}
    assignments = {"measured": measured, "table": table}
    strategy = gan.distribute_strategy
    data = _step_data(gan, batch_size * strategy.num_replicas_in_sync)
    if strategy.num_replicas_in_sync > 1:
        data = strategy.experimental_distribute_dataset(data)
    iterator = iter(data)
    functions = {}

    def run(variant):
        with _assigned(layers, assignments[variant]):
            if variant not in functions:
                gan.make_train_function(force=True)
                functions[variant] = gan.train_function
            for _ in range(STEPS_PER_CALL):
                logs = functions[variant](iterator)
            float(logs["g_loss"])  # waits for the step

    key = step_key(gan, batch_size, layers, measured)
    saved = _snapshot(gan)
    try:
        verdict, source = method_cache.choose(
            STEP_FAMILY,
            key,
            {variant: (lambda v=variant: run(v)) for variant in assignments},
            "table",
            device,
        )
    finally:
        _restore(saved)
        gan.train_function = None  # fit traces its own step, with the final choices
    entry = method_cache.lookup(STEP_FAMILY, key, device) if verdict == "measured" else None
    seconds = (entry or {}).get("seconds", {})
    if "table" in seconds and seconds["measured"] > (1 - MIN_GAIN) * seconds["table"]:
        verdict = "table"  # not faster by the margin
    return verdict, source


def step_key(gan, batch_size, layers, measured):
    """The step verdict's cache key: the model's shapes, precision and replicas, and each
    layer's measured and table methods (a new table or new choices validate anew)."""
    return (
        batch_size,
        gan.distribute_strategy.num_replicas_in_sync,
        gan.dtype_policy.name,
        gan.generator.dtype_policy.name,
        int(bool(gan.jit_compile)),
        *(
            f"{name}:{_shape_text(layer, shape)}={measured[name][0]}|{table}"
            for name, layer, shape, table in layers
        ),
    )


def layer_key(layer, shape):
    """A layer's cache key: backend, pass, dtype, shape and expert count."""
    return ("tf", "fwd+bwd", layer.compute_dtype, _shape_text(layer, shape), layer.num_experts)


@contextlib.contextmanager
def _assigned(layers, assignment):
    """The layers running `assignment`'s methods inside the block, where a step traces
    (a traced step keeps the methods it was traced with); their choices as before after."""
    saved = [(layer, layer.measured_choice) for _, layer, _, _ in layers]
    try:
        for name, layer, _, _ in layers:
            layer.measured_choice = assignment[name]
        yield
    finally:
        for layer, choice in saved:
            layer.measured_choice = choice


def _table_method(layer, shape):
    """The method "auto" takes from the shipped table (no measured choice)."""
    saved = getattr(layer, "measured_choice", None)
    layer.measured_choice = None
    try:
        return layer.conv_method_choice(shape)[0]
    finally:
        layer.measured_choice = saved


def _shape_text(layer, shape):
    batch, height, width, channels = shape
    kh, kw = layer.kernel_size
    return (
        f"{batch}x{height}x{width}x{channels}>{layer.filters}"
        f"k{kh}x{kw}s{layer.strides[0]}{layer.padding}"
    )


def layer_candidates(layer, shape):
    """{method: one forward + backward pass at `shape`, blocking}: every method but
    dense_map (a matrix of the whole map: only for the tiny maps its rule picks), less
    those whose intermediate tensor would be too large."""
    batch, height, width, channels = shape
    kh, kw = layer.kernel_size
    stride, padding = layer.strides[0], layer.padding.upper()
    experts, filters, dtype = layer.num_experts, layer.filters, layer.compute_dtype
    out = -(-height // stride) * -(-width // stride)
    sizes = {
        "patches": batch * out * kh * kw * channels,
        "stacked_inputs": batch * height * width * experts * channels,
        "stacked_outputs": batch * out * experts * filters,
    }
    rng = np.random.RandomState(0)
    x = tf.constant(rng.standard_normal(shape), dtype)
    alpha = tf.constant(rng.uniform(size=(batch, experts)), dtype)
    kernel = tf.constant(0.05 * rng.standard_normal((experts, kh, kw, channels, filters)), dtype)
    y_shape = layer.compute_output_shape(shape)
    dy = tf.constant(rng.standard_normal(y_shape), dtype)
    candidates = {}
    for method in METHODS:
        mb = sizes.get(method, 0) * tf.as_dtype(dtype).size / 2**20
        if method == "dense_map" or mb > MAX_INTERMEDIATE_MB:
            continue

        @tf.function
        def step(x, alpha, kernel, method=method):
            with tf.GradientTape() as tape:
                tape.watch([x, alpha, kernel])
                y = dynamic_conv2d(x, alpha, kernel, stride, padding, method)
                loss = tf.reduce_sum(y * dy)
            grads = tape.gradient(loss, [x, alpha, kernel])
            return tf.add_n([tf.reduce_sum(tf.cast(g, tf.float32)) for g in grads])

        candidates[method] = lambda step=step: float(step(x, alpha, kernel))
    return candidates


def _step_data(gan, rows):
    """A repeating dataset of one random batch of `rows` (image, target, task) rows with a
    static batch, as fit's training stream has."""
    rng = np.random.RandomState(0)
    inputs = gan.discriminator.input
    image, target, task = (inputs[k].shape[1:] for k in ("image", "target", "task"))
    batch = (
        rng.uniform(-1, 1, (rows, *image)).astype("float32"),
        rng.uniform(-1, 1, (rows, *target)).astype("float32"),
        (rng.uniform(size=(rows, *task)) < 0.5).astype("float32"),
    )
    return tf.data.Dataset.from_tensors(batch).repeat()


def _snapshot(gan):
    """[(variable, value)] of everything a train step changes: weights, optimizer slots
    and step counters, metric totals."""
    owners = [gan.generator, gan.discriminator, gan.g_optimizer, gan.d_optimizer, *gan.metrics]
    seen, saved = set(), []
    for owner in owners:
        for variable in owner.variables:
            if id(variable) not in seen:
                seen.add(id(variable))
                saved.append((variable, keras.ops.convert_to_numpy(variable)))
    return saved


def _restore(saved):
    for variable, value in saved:
        variable.assign(value)


def _device():
    """The machine key's device: "cpu", or the first GPU's name."""
    gpus = tf.config.list_physical_devices("GPU")
    if not gpus:
        return "cpu"
    details = tf.config.experimental.get_device_details(gpus[0])
    return f"gpu:{details.get('device_name', gpus[0].name)}"
