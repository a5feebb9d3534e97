"""Data sets: the factor-controlled Shapes world, bundled real data, the user's own data.

Every data set follows :class:`~contrastlab.data.base.Dataset` and is built by name with
:func:`build_dataset`.
"""

from contrastlab.data.base import Batch, Dataset, class_name, label_names
from contrastlab.data.registry import DATASETS, build_dataset
from contrastlab.data.shapes import ShapesDataset
from contrastlab.data.tensor_dataset import TensorDataset

__all__ = ["Batch", "Dataset", "DATASETS", "build_dataset", "ShapesDataset", "TensorDataset", "class_name",
           "label_names"]
