"""Training under DeepSpeed: config, generated DeepSpeed JSON, the explicit loop, checkpoints, schedule, run lock.

DeepSpeed is imported only when training starts (`pip install 'cat-tts[train]'`).
"""

from cat_tts.training.config import TrainConfig
from cat_tts.training.loop import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "train"]
