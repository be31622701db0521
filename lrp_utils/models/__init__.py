"""Models: the package's own :class:`TinyTransformer`, :func:`load` for the cached real models and
:func:`load_local` for a checkpoint folder you bring."""
from .local import load_local
from .tiny import TinyConfig, TinyTransformer
from .train import accuracy, train
from .zoo import CacheError, load, recipe_info


__all__ = ["TinyConfig", "TinyTransformer", "load", "load_local", "recipe_info", "CacheError", "train", "accuracy"]
