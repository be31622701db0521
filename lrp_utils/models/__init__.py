"""Models: the package's own :class:`TinyTransformer` and :func:`load` for the cached real models."""
from .tiny import TinyConfig, TinyTransformer
from .train import accuracy, train


def load(name: str, **kwargs):
    """Load a named model (``"minilm-rt"``, ``"smollm2-135m"``, tiny checkpoints); see ``zoo.load``."""
    from .zoo import load as _load

    return _load(name, **kwargs)


__all__ = ["TinyConfig", "TinyTransformer", "load", "train", "accuracy"]
