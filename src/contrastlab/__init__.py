"""contrastlab: contrastive, multi-view and multimodal representation learning.

Train encoders from views that belong together, then see what the representation learned.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    """``contrastlab.analyze`` and ``contrastlab.analyze_file``, imported when first used (``import contrastlab``
    stays light)."""
    if name in ("analyze", "analyze_file", "load_features"):
        from contrastlab.evaluation import analyze as module

        return getattr(module, name)
    raise AttributeError(f"module 'contrastlab' has no attribute {name!r}")
