"""What a run is: the modalities and the twelve tasks, the per-example conditions, the
run configuration (frozen dataclasses and presets) and the flags that override it.

    from dygan_tf.config import get_preset, task_code
"""

from dygan_tf.utils.lazy import lazy_exports

__all__, __getattr__, __dir__ = lazy_exports(
    __name__,
    {
        "get_preset": "dygan_tf.config.run_config",
        "task_code": "dygan_tf.config.tasks",
    },
)
