"""TensorBoard logging as a training callback: ``train(..., callbacks=[TensorBoardLogger()])``.

Each epoch writes to ``RUN/tensorboard/`` (or ``log_dir``):

* scalars ``loss/train``, ``loss/val``, ``accuracy/train``, ``accuracy/val``, ``lr``,
  ``time/epoch_seconds``, ``time/eval_seconds``, and ``extra/<key>`` for any other number
  a callback added to the epoch's row;
* images ``confusion_matrix/<split>`` and ``predictions/<split>`` (a prediction gallery
  of the same ``n_gallery`` images every epoch), where ``<split>`` is ``val`` when the
  recipe holds out a validation split and ``train_sample`` (a seeded stratified sample
  of the training images) otherwise;
* the resolved recipe as text (``recipe``) at the first epoch.

Where the images come from, first match wins: ``images``/``labels`` arrays given to the
constructor; the ``dataset`` given to it; else the dataset the run itself used, reloaded
from the run's ``config.json`` (its ``data_dir``) and split exactly as training split it.
The callback only sees the :class:`~fmnist.loop.Loop`, hence this lazy loading; if
the data cannot be found the images are skipped with a warning and scalars still flow.

View with ``tensorboard --logdir runs/``. The ``tensorboard`` package is an optional
extra (``pip install 'fmnist[tensorboard]'``); ``import fmnist`` never needs it.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .callbacks import Callback
from .errors import ConfigError, FmnistError

if TYPE_CHECKING:
    from .datasets import Dataset
    from .loop import Loop

log = logging.getLogger("fmnist")

INSTALL_HINT = "pip install 'fmnist[tensorboard]'"

SCALARS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "train_acc": "accuracy/train",
    "val_acc": "accuracy/val",
    "lr": "lr",
    "seconds": "time/epoch_seconds",
    "eval_seconds": "time/eval_seconds",
}


def _summary_writer_class():
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError(
            f"TensorBoard logging needs the tensorboard package: {INSTALL_HINT}"
        ) from None
    return SummaryWriter


def figure_to_array(fig) -> np.ndarray:
    """``(H, W, 3)`` uint8 RGB pixels of a matplotlib figure (via PNG, like the report)."""
    from PIL import Image

    from .plots import fig_to_png_bytes

    with Image.open(io.BytesIO(fig_to_png_bytes(fig))) as im:
        return np.asarray(im.convert("RGB"))


class TensorBoardLogger(Callback):
    """Write scalars, a confusion matrix and a prediction gallery to TensorBoard each epoch.

    ``log_dir``: default ``RUN/tensorboard``. ``images``/``labels``: the arrays to draw
    the figures from (default: the run's validation split, else a training sample).
    ``max_images``: at most this many are predicted each epoch (stratified sample).
    ``image_every``: draw the figures every this many epochs (scalars: every epoch).
    The event file is closed when training ends (or by :meth:`close`, or as a context
    manager).
    """

    def __init__(
        self,
        log_dir: str | Path | None = None,
        *,
        images: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        classes: Sequence[str] | None = None,
        dataset: Dataset | None = None,
        max_images: int | None = 5000,
        n_gallery: int = 12,
        image_every: int = 1,
        seed: int = 0,
    ) -> None:
        self._writer_class = _summary_writer_class()  # fail now, not after an epoch
        if (images is None) != (labels is None):
            raise ConfigError("TensorBoardLogger: give both images and labels, or neither.")
        if image_every < 1:
            raise ConfigError(f"TensorBoardLogger: image_every must be >= 1; got {image_every}.")
        self.log_dir = None if log_dir is None else Path(log_dir)
        self.images, self.labels = images, labels
        self.classes = None if classes is None else tuple(classes)
        self.dataset = dataset
        self.max_images = max_images
        self.n_gallery = n_gallery
        self.image_every = image_every
        self.seed = seed
        self.split_name = "given" if images is not None else None
        self.writer = None
        self._data_ready = False

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> TensorBoardLogger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    # ------------------------------------------------------------------ data

    def _prepare_data(self, state: Loop) -> None:
        """Pick the arrays the figures are drawn from (once, at the first epoch)."""
        self._data_ready = True
        config = _read_config(state.run_dir)
        if self.classes is None:
            self.classes = tuple(config.get("dataset", {}).get("classes") or ())
        if self.images is None:
            try:
                self._images_from_dataset(state, config)
            except FmnistError as e:
                log.warning("tensorboard: no images to draw figures from (%s); logging "
                            "scalars only. Pass images=/labels= or dataset= to "
                            "TensorBoardLogger.", e)
                return
        self.images, self.labels = np.asarray(self.images), np.asarray(self.labels)
        if self.max_images is not None and len(self.labels) > self.max_images:
            from .datasets import stratified_split

            _, keep = stratified_split(self.labels, self.max_images / len(self.labels),
                                       self.seed)
            self.images, self.labels = self.images[keep], self.labels[keep]
        if not self.classes:
            self.classes = tuple(str(i) for i in range(int(self.labels.max()) + 1))

    def _images_from_dataset(self, state: Loop, config: dict[str, Any]) -> None:
        from .runs import run_dataset
        from .training import prepare_data

        ds = self.dataset
        if ds is None:
            # the files training just read are there: never download here
            ds = run_dataset(state.run_dir, config, offline=True)
        if not self.classes:
            self.classes = tuple(ds.classes)
        train, val, _ = prepare_data(state.recipe, ds)
        if val is not None:
            self.images, self.labels, self.split_name = val.images, val.labels, "val"
        else:
            self.images, self.labels = train.images, train.labels
            self.split_name = "train_sample"
            if self.max_images is None:
                self.max_images = 1000

    # ------------------------------------------------------------------ callback

    def on_train_end(self, loop: Loop) -> None:
        self.close()

    def on_epoch_end(self, state: Loop) -> str | None:
        if self.writer is None:
            log_dir = self.log_dir or state.run_dir / "tensorboard"
            self.writer = self._writer_class(log_dir=str(log_dir))
            self.log_dir = Path(log_dir)
            recipe = json.dumps(state.recipe.to_dict(), indent=2)
            self.writer.add_text("recipe", f"```\n{recipe}\n```", state.epoch)
        step = state.epoch
        for key, value in state.row.items():
            if key == "epoch" or not isinstance(value, int | float) or isinstance(value, bool):
                continue
            self.writer.add_scalar(SCALARS.get(key, f"extra/{key}"), float(value), step)
        if (step - 1) % self.image_every == 0:
            if not self._data_ready:
                self._prepare_data(state)
            if self.images is not None and len(self.labels):
                self._log_figures(state, step)
        self.writer.flush()
        return None

    def _log_figures(self, state: Loop, step: int) -> None:
        from .metrics import confusion_matrix
        from .plots import confusion_matrix_plot, prediction_gallery

        probs = state.predict_probs(self.images)  # (N, C)
        classes = self.classes or ()
        num_classes = max(len(classes), probs.shape[1])
        names = list(classes) + [str(i) for i in range(len(classes), num_classes)]
        cm = confusion_matrix(self.labels, probs.argmax(1), num_classes)
        split = self.split_name
        fig = confusion_matrix_plot(cm, names)
        self.writer.add_image(f"confusion_matrix/{split}", figure_to_array(fig), step,
                              dataformats="HWC")
        n = min(self.n_gallery, len(self.labels))
        if n:
            fig = prediction_gallery(self.images[:n], probs[:n], self.labels[:n], names, n=n)
            self.writer.add_image(f"predictions/{split}", figure_to_array(fig), step,
                                  dataformats="HWC")


def _read_config(run_dir: Path) -> dict[str, Any]:
    from .runs import read_json_object

    return read_json_object(Path(run_dir) / "config.json")


__all__ = ["TensorBoardLogger", "SCALARS", "figure_to_array"]
