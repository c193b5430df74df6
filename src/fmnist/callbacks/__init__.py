"""Training callbacks, one per file: what the fit loop does besides stepping.

``train(..., callbacks=[MyCallback()])`` adds yours before the built-in ones, so a row
you add to in ``on_epoch_end`` is what history.csv and the checkpoint keep.
"""

from .base import HOOKS, Callback, CallbackList
from .checkpoint import Checkpoint, callback_states, restore_best
from .early_stopping import EarlyStopping, should_stop
from .ema import EMA
from .history import History
from .progress import ProgressBar
from .terminate_on_nan import TerminateOnNaN, TrainingDiverged

__all__ = ["HOOKS", "Callback", "CallbackList", "Checkpoint", "EMA", "EarlyStopping",
           "History", "ProgressBar", "TerminateOnNaN", "TrainingDiverged", "callback_states",
           "restore_best", "should_stop"]
