"""Training: the one loop, its typed config, checkpoints, data-parallel helpers, and reading runs back.

``load_run(run_dir)`` is how evaluation gets a trained model, its data and its views.
"""

from contrastlab.training.config import TrainConfig, config_from_dict, config_to_dict, load_config
from contrastlab.training.loop import NonFiniteLoss, TrainResult, train
from contrastlab.training.run import LoadedRun, load_run

__all__ = [
    "LoadedRun",
    "NonFiniteLoss",
    "TrainConfig",
    "TrainResult",
    "config_from_dict",
    "config_to_dict",
    "load_config",
    "load_run",
    "train",
]
