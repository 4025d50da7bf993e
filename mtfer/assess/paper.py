"""The paper's reported accuracies (Saroop et al., 2021, its results tables), to show beside ours only where
the data set and the setting are the same."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PaperResult:
    dataset: str  # data set format name (mtfer.core.tasks.FORMATS)
    setting: str  # how the paper trained it
    task: str
    accuracy: float
    loss: float | None = None


# Saroop et al., arXiv 2110.15028, on the paper's own 90/10 split, where the same 10% served early stopping
# and reporting (optimistic).
PAPER_RESULTS: tuple[PaperResult, ...] = (
    PaperResult("rafdb", "multi-task", "emotion", 0.7926, 0.6956),
    PaperResult("rafdb", "multi-task", "gender", 0.7832, 0.5110),
    PaperResult("rafdb", "multi-task", "race", 0.8610, 0.4524),
    PaperResult("rafdb", "multi-task", "age", 0.7476, 0.9003),
    PaperResult("rafdb", "single-task", "emotion", 0.4538),
    PaperResult("fer2013", "single-task", "emotion", 0.6791),
    PaperResult("fer2013", "RAF-DB model fine-tuned on FER2013", "emotion", 0.5312),
)

PAPER_DATASET_NAMES = {"rafdb": "RAF-DB", "fer2013": "FER2013"}


def _paper(dataset: str, setting: str, task: str) -> PaperResult | None:
    return next((r for r in PAPER_RESULTS if (r.dataset, r.setting, r.task) == (dataset, setting, task)), None)


def paper_reference(dataset: str, task: str, multi_task: bool) -> tuple[PaperResult | None, bool]:
    """The paper's figure to show beside an accuracy of `task` on `dataset` (a format name) and whether it was
    measured on the same data set. FER2013 emotion -> the paper's FER2013 figure; RAF-DB -> its multi- or
    single-task figure; gender, race and age on other data -> the RAF-DB multi-task figure (different data,
    a rough guide only); anything else -> None."""
    family = "fer2013" if dataset.startswith("fer2013") else dataset
    if family == "fer2013" and task == "emotion":
        return _paper("fer2013", "single-task", "emotion"), True
    if family == "rafdb":
        result = _paper("rafdb", "multi-task" if multi_task else "single-task", task)
        return (result, True) if result else (_paper("rafdb", "multi-task", task), True)
    if task != "emotion":
        return _paper("rafdb", "multi-task", task), False
    return None, False
