"""Bad inputs for the photo datasets and fine-tuning (table-driven; harness in badinput.py)."""

from __future__ import annotations

from pathlib import Path

from badinput import Case, check_case, parametrize_cases

CASES = [
    Case("photos-offline-not-found",
         ["data", "info", "--dataset", "clothing-dataset-small", "--offline",
          "--data-dir", "{tmp}/empty"],
         names=["clothing-dataset-small", "{tmp}/empty"], fix="FMNIST_PHOTOS_DIR"),
    Case("init-missing", ["train", "--init", "{tmp}/nope", "--out", "{tmp}/r"],
         names="{tmp}/nope", fix="run folder"),
    Case("init-not-a-model", ["train", "--init", "{tmp}/notes.txt", "--out", "{tmp}/r"],
         names="notes.txt", fix="point at another file"),
    Case("finetune-without-init", ["train", "--recipe", "finetune", "--out", "{tmp}/r"],
         names="freeze_epochs", fix="--init"),
    Case("freeze-all-epochs",
         ["train", "--init", "{tmp}", "--epochs", "3", "--freeze-epochs", "3", "--out", "{tmp}/r"],
         names="freeze_epochs=3", fix="[0, epochs=3)"),
]


@parametrize_cases(CASES)
def test_bad_input(case: Case, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model")
    check_case(case, tmp_path, {}, [tmp_path])
