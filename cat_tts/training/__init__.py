"""Training on a DeepSpeed engine: config, generated DeepSpeed JSON, the explicit loop, checkpoints, schedule.

DeepSpeed is imported only when training starts (`pip install 'cat-tts[train]'`).
"""

from cat_tts.training.config import TrainConfig
from cat_tts.training.loop import NonFiniteLossError, TrainResult, train

__all__ = ["NonFiniteLossError", "TrainConfig", "TrainResult", "train"]
