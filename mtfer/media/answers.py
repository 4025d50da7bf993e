"""Answers in people's words: each task's verdict (its class, or "not sure" below the bundle's threshold)
as the page, the live overlay, the CSVs and the CLI say it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from mtfer.assess.abstain import Verdict, min_confidences, verdict
from mtfer.core.tasks import RACE, RACE_OTHER, UNTAUGHT_CLASSES, display_name

NOT_SURE = "Not sure"
ABSTAIN_NAMES: dict[str, str] = {"race": "Other / not sure"}
# The class an abstaining answer already stands for: an unsure race answer says "Other / not sure (Asian)", never
# "Other / not sure (Other or Asian)".
ABSTAIN_CLASSES: dict[str, str] = {"race": RACE.classes[RACE_OTHER]}


def shown_classes(task: str, classes: Sequence[str]) -> list[str]:
    """The classes of a task that people see: those no data set can teach (UNTAUGHT_CLASSES) left out."""
    hidden = UNTAUGHT_CLASSES.get(task, ())
    return [c for c in classes if c not in hidden]


def face_verdicts(prediction: Any, min_confidence: Mapping[str, float]) -> dict[str, Verdict]:
    """{task: Verdict} of a FacePrediction, in model order, untaught classes never chosen."""
    return {
        task: verdict(task, probs, float(min_confidence.get(task, 0.0)), UNTAUGHT_CLASSES.get(task, ()))
        for task, probs in prediction.probabilities.items()
    }


def thresholds(predictor: Any) -> dict[str, float]:
    """Each task's "not sure" threshold for a Predictor's bundle (its metadata `abstain`, the defaults otherwise)."""
    return min_confidences(predictor.bundle.metadata, predictor.tasks)


def answer_labels(
    probabilities: Mapping[str, Mapping[str, float]], min_confidence: Mapping[str, float]
) -> dict[str, str]:
    """{task: the answer the page shows} in the model's identifiers: the class when sure, "not sure" (race: "other
    / not sure") when not. The CSVs, `--json` and the command line's lines carry it beside the top class."""
    out = {}
    for task, probs in probabilities.items():
        v = verdict(task, probs, float(min_confidence.get(task, 0.0)), UNTAUGHT_CLASSES.get(task, ()))
        out[task] = v.label if v.sure else abstain_name(task).lower()
    return out


def face_json(prediction: Any, min_confidence: Mapping[str, float]) -> dict[str, Any]:
    """One face as `mtfer predict --json` and the HTTP API give it: box, eyes, rotation, every probability, the top
    class per task and the answer the page shows (`answer`: "not sure" included)."""
    return {**prediction.to_dict(), "answer": answer_labels(prediction.probabilities, min_confidence)}


def abstain_name(task: str) -> str:
    """'Other / not sure' for race (a face may belong to none of its groups), 'Not sure' otherwise."""
    return ABSTAIN_NAMES.get(task, NOT_SURE)


def _options(v: Verdict, with_shares: bool) -> str:
    """'Sad 28% or Angry 21%': the two likeliest classes of an unsure verdict, without the class its "not sure"
    already names (race's "other", in 'Other / not sure (Asian 30%)')."""
    named = [(v.label, v.confidence), (v.runner_up, v.runner_up_confidence)]
    parts = [
        display_name(v.task, label) + (f" {share:.0%}" if with_shares and share is not None else "")
        for label, share in named
        if label is not None and label != ABSTAIN_CLASSES.get(v.task)
    ]
    return " or ".join(parts)


def answer(v: Verdict) -> str:
    """'Happy' when sure; 'Not sure (Sad or Angry)' / 'Other / not sure (Caucasian or Asian)' when not."""
    if v.sure:
        return display_name(v.task, v.label)
    options = _options(v, with_shares=False)
    return f"{abstain_name(v.task)} ({options})" if options else abstain_name(v.task)


def verdict_text(v: Verdict) -> str:
    """'Happy (87%)' when sure; 'not sure (Sad 28% or Angry 21%)', for race 'other / not sure (...)', when not."""
    if v.sure:
        return f"{display_name(v.task, v.label)} ({v.confidence:.0%})"
    options = _options(v, with_shares=True)
    return f"**{abstain_name(v.task).lower()}**" + (f" ({options})" if options else "")


def face_line(number: int, verdicts: Mapping[str, Verdict]) -> str:
    """'**Face 1:** Emotion: Happy (87%) · Gender: Female (90%) · Race: Asian (61%) · Age group: 20-39 years (70%)'."""
    parts = [f"{display_name(task)}: {verdict_text(v)}" for task, v in verdicts.items()]
    return f"**Face {number}:** " + " · ".join(parts)


def photo_lines(number: int, verdicts: Mapping[str, Verdict]) -> list[str]:
    """The short label drawn beside a face on the photo: one line per task, the face's number on the first."""
    lines = []
    for task, v in verdicts.items():
        if v.sure:
            lines.append(f"{display_name(task, v.label)} {v.confidence:.0%}")
        else:
            lines.append(f"{display_name(task)}: {abstain_name(task).lower()}")
    if lines:
        lines[0] = f"{number}. {lines[0]}"
    return lines
