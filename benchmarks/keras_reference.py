"""The seed tutorial's Keras code, as written, as a peer for the time-to-accuracy table.

    pip install 'fmnist[keras-reference]'      # tensorflow-cpu
    python benchmarks/keras_reference.py [--seeds 1] [--data-dir DIR] [--out FILE]

The TensorFlow tutorial's CNN: Conv2D 32-64-64 (3x3, ReLU, 2x2 max-pooling after the first
two), Flatten, Dense 128, Dense 10; Adam at Keras' defaults, batch 256, up to 20 epochs,
pixels scaled to [0, 1], the test set as ``validation_data`` and ``EarlyStopping(patience=3,
restore_best_weights=True)`` on its loss — exactly what the tutorial does, so "test
accuracy after each epoch" is Keras' own ``val_accuracy``. Training time excludes that
per-epoch evaluation (as ``time_to_accuracy.py`` excludes its own), timed with the
``on_test_begin``/``on_test_end`` hooks. Writes ``benchmarks/results/keras-reference-cpu.json``
(each seed's curve of (training seconds, test accuracy), final accuracy after the restore,
time to 90/91/92%). Without tensorflow it prints why and exits 0 having written nothing;
``time_to_accuracy.py --keras`` runs it in a subprocess and adds its runs to its table.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
THRESHOLDS = (0.90, 0.91, 0.92)
NAME = "keras-tutorial"


def skip_reason() -> str | None:
    """Why the reference cannot run here (tensorflow missing), or None."""
    try:
        import tensorflow  # noqa: F401
    except ImportError as exc:
        return (f"tensorflow is not installed ({exc}); "
                "pip install 'fmnist[keras-reference]' to run the Keras reference")
    return None


def tutorial_model():
    """The tutorial's Sequential CNN, layer for layer (130,890 parameters)."""
    import tensorflow as tf
    from tensorflow.keras import layers, models

    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(32, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.Flatten(),
        layers.Dense(128, activation="relu"),
        layers.Dense(10),
    ])
    loss = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
    return model


def curve_callback():
    """A Keras callback recording (training seconds, val_accuracy) at each epoch end."""
    import tensorflow as tf

    class Curve(tf.keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.curve: list[tuple[float, float]] = []
            self.train_seconds = self.eval_seconds = 0.0

        def on_epoch_begin(self, epoch, logs=None) -> None:
            self._t0 = time.perf_counter()
            self._eval = 0.0

        def on_test_begin(self, logs=None) -> None:
            self._te = time.perf_counter()

        def on_test_end(self, logs=None) -> None:
            self._eval += time.perf_counter() - self._te

        def on_epoch_end(self, epoch, logs=None) -> None:
            self.train_seconds += time.perf_counter() - self._t0 - self._eval
            self.eval_seconds += self._eval
            self.curve.append((round(self.train_seconds, 2), float(logs["val_accuracy"])))

    return Curve()


def train_once(data, seed: int) -> dict:
    """Train the tutorial model once; its curve, final test accuracy and timings."""
    import tensorflow as tf

    (x_train, y_train), (x_test, y_test) = data
    tf.keras.utils.set_random_seed(seed)
    model = tutorial_model()
    curve = curve_callback()
    stop = tf.keras.callbacks.EarlyStopping(patience=3, restore_best_weights=True)
    model.fit(x_train, y_train, epochs=20, batch_size=256, verbose=0,
              validation_data=(x_test, y_test), callbacks=[curve, stop])
    _, final = model.evaluate(x_test, y_test, batch_size=1024, verbose=0)
    return {
        "recipe": NAME, "seed": seed, "epochs": len(curve.curve), "curve": curve.curve,
        "final_accuracy": float(final), "train_seconds": round(curve.train_seconds, 2),
        "eval_seconds": round(curve.eval_seconds, 2), "stop_reason": None,
        "time_to": {f"{th:g}": next((t for t, a in curve.curve if a >= th), None)
                    for th in THRESHOLDS},
    }


def load_data(data_dir: str | None, limit: int | None = None):
    """Fashion-MNIST as the tutorial feeds it: (N, 28, 28, 1) float32 in [0, 1]; ``limit``
    keeps the first images of each split (a smoke test)."""
    sys.path.insert(0, str(HERE.parent / "src"))
    from fmnist.datasets import load_dataset

    ds = load_dataset("fashion-mnist", data_dir)
    scale = (lambda a: (a.reshape(-1, 28, 28, 1) / 255.0).astype("float32"))  # noqa: E731
    tr, te = ds.train, ds.test
    return ((scale(tr.images[:limit]), tr.labels[:limit]),
            (scale(te.images[:limit]), te.labels[:limit]))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--data-dir")
    p.add_argument("--limit", type=int, help="smoke test on the first N images of each split")
    p.add_argument("--out", type=Path, default=HERE / "results" / "keras-reference-cpu.json")
    args = p.parse_args(argv)
    reason = skip_reason()
    if reason:
        print(f"skipped: {reason}")
        return 0
    import tensorflow as tf

    data = load_data(args.data_dir, args.limit)
    runs = []
    for seed in range(args.seeds):
        runs.append(train_once(data, seed))
        r = runs[-1]
        print(f"{NAME} seed {seed}: {r['final_accuracy']:.2%} after {r['train_seconds']:.0f} s "
              f"training ({r['epochs']} epochs)", flush=True)
    doc = {"created": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
           "command": " ".join(["python", *sys.argv]),
           "tensorflow": tf.__version__, "threads": os.cpu_count(), "runs": runs}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
