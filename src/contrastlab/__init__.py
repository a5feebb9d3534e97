"""contrastlab: contrastive, multi-view and multimodal representation learning.

Train encoders from views that belong together, then see what the representation learned.
"""

__version__ = "0.1.0"
