"""evomm: evolutionary model merging, in parameter space and data-flow space, as a framework.

Public entry points:
    :func:`evomm.plugins.load_plugins` / :func:`evomm.plugins.get_plugins`: the registries.
    :data:`hookimpl`: decorator for plugin hook implementations.
    :class:`evomm.errors.EvommError`: base of every error evomm raises on purpose.
"""

from evomm.errors import EvommError
from evomm.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["EvommError", "__version__", "hookimpl"]
