"""Models: the package's own :class:`TinyTransformer` and :func:`load` for the cached real models."""
from .tiny import TinyConfig, TinyTransformer
from .train import accuracy, train
from .zoo import CacheError, load, recipe_info


__all__ = ["TinyConfig", "TinyTransformer", "load", "recipe_info", "CacheError", "train", "accuracy"]
