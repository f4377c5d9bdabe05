"""A package's public names imported on first use (PEP 562), so that importing the
package starts neither Keras nor TensorFlow: the commands check their flags first."""

import importlib
import sys


def lazy_exports(package, exports):
    """`(__all__, __getattr__, __dir__)` for `package` (its `__name__`) whose public names
    `exports` ({name: defining module}) are imported when first read."""

    def __getattr__(name):
        if name in exports:
            value = getattr(importlib.import_module(exports[name]), name)
            setattr(sys.modules[package], name, value)
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    def __dir__():
        return sorted(set(vars(sys.modules[package])) | set(exports))

    return sorted(exports), __getattr__, __dir__
