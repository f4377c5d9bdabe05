"""What a run is: the modalities and the twelve tasks, the per-example conditions, the
run configuration (frozen dataclasses and presets) and the flags that override it.
"""
