"""Cards as pure functions of a bundle's metadata: accuracy cards beside the paper's figures (coloured only where
the data set and the protocol are the same), and the model card (what it predicts, what it learnt from, how it was
scored, how long it trained). The pages lay them out; nothing here imports Streamlit."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from mtfer.app.wording import (
    ARCHITECTURE_NAMES,
    DATASET_LABELS,
    SAMPLE_TITLES,
    SPLIT_TITLES,
    dataset_title,
    evaluation_dataset,
    evaluation_split,
    format_date,
    format_duration,
    joined,
    percent,
)
from mtfer.assess.paper import PAPER_DATASET_NAMES, PaperResult, paper_reference
from mtfer.assess.race_groups import paper_measure_text, summary_text
from mtfer.core.tasks import TASK_NAMES, display_name
from mtfer.store.lineage import Lineage, read_lineage

# One line for the pages, above the accuracy cards.
PAPER_NOTE = (
    "The paper's figures come from its own 90/10 split, where the same images chose when training stopped and gave "
    "the score (optimistic), and mostly from RAF-DB. They are shown in grey as a rough guide; a difference is "
    "coloured only where the data set and the protocol are the same."
)


@dataclass(frozen=True)
class AccuracyCard:
    """One task's accuracy on one evaluation, with the paper's figure where there is one."""

    task: str
    evaluation: str  # e.g. "fer2013-test"
    accuracy: float | None
    n: int
    paper: PaperResult | None = None
    same_data: bool = False
    multi_task: bool = False
    protocol: str | None = None  # the model's ("holdout" or "paper"); None when not known
    note: str = ""  # how the figure was counted, when not plainly (race scored the paper's way)

    @property
    def label(self) -> str:
        """Short and stable: 'Emotion · fer2013-test'."""
        return f"{self.task.capitalize()} · {self.evaluation}"

    @property
    def title(self) -> str:
        """For people, short enough for a card: 'Emotion · FER2013' (test images), 'Age group · UTKFace
        (validation)'."""
        split = evaluation_split(self.evaluation)
        where = dataset_title(evaluation_dataset(self.evaluation))
        if split is None:
            return display_name(self.task)
        return f"{display_name(self.task)} · {where}" + ("" if split == "test" else f" ({SPLIT_TITLES[split]})")

    @property
    def value(self) -> str:
        return percent(self.accuracy)

    @property
    def comparable(self) -> bool:
        """Like for like with the paper's figure: the same data set, the paper's protocol (the 10% that chose when
        to stop is the one scored) and the same setting (multi- or single-task)."""
        return bool(
            self.paper is not None
            and self.same_data
            and self.accuracy is not None
            and self.protocol == "paper"
            and evaluation_split(self.evaluation) == "val"
            and self.paper.setting == ("multi-task" if self.multi_task else "single-task")
        )

    @property
    def delta(self) -> str | None:
        """Difference to the paper in percentage points, only where the comparison is like for like."""
        if not self.comparable or self.paper is None or self.accuracy is None:
            return None
        return f"{(self.accuracy - self.paper.accuracy) * 100:+.1f} pts vs paper"

    @property
    def badge(self) -> str | None:
        """What st.metric shows as its delta: the coloured difference where like for like, else the paper's figure
        (to be shown in grey, `badge_color`, without an arrow)."""
        return self.delta if self.comparable else self.paper_value

    @property
    def badge_color(self) -> str:
        """st.metric's delta_color: "normal" (green/red) for a like-for-like difference, else "off" (grey)."""
        return "normal" if self.comparable else "off"

    @property
    def paper_value(self) -> str | None:
        """'Paper: 67.9%', shown in grey beside a score it is not like for like with."""
        return None if self.paper is None else f"Paper: {self.paper.accuracy:.1%}"

    @property
    def paper_text(self) -> str:
        """One line on how this score relates to the paper's."""
        if self.paper is None:
            return "The paper reports no figure for this."
        where = PAPER_DATASET_NAMES.get(self.paper.dataset, self.paper.dataset)
        if self.comparable:
            return (
                f"Same data set and protocol as the paper's {self.paper.accuracy:.1%} ({where}, {self.paper.setting})."
            )
        if not self.same_data:
            return f"Paper: {self.paper.accuracy:.1%} on {where}, a different data set; not directly comparable."
        return (
            f"Paper: {self.paper.accuracy:.1%} on {where} ({self.paper.setting}) with its own optimistic split; "
            "not directly comparable."
        )

    @property
    def help(self) -> str:
        return f"{self.n:,} labelled faces. {self.note}{self.paper_text}"


def accuracy_cards(
    evaluation: str, task_metrics: Mapping[str, Mapping], multi_task: bool, protocol: str | None = None
) -> list[AccuracyCard]:
    """Cards for one evaluation's {task: {"accuracy", "n", ...}} in model order; tasks without labels left out.
    `protocol` is the model's (metadata["protocol"]): only a "paper" model's validation scores are like for like
    with the paper's figures."""
    dataset = evaluation_dataset(evaluation)
    cards = []
    for task in TASK_NAMES:
        m = task_metrics.get(task)
        if not m or not m.get("n"):
            continue
        paper, same = paper_reference(dataset, task, multi_task)
        accuracy, note = m.get("accuracy"), ""
        if m.get("three_groups_accuracy") is not None:  # race with "other": shown as the paper scores race
            accuracy = m["three_groups_accuracy"]
            note = (
                "Race as the paper scores it: on the faces of its three groups, the likeliest of those three "
                f"(with every answer counted, “other” as wrong: {percent(m.get('accuracy'))}). "
            )
        cards.append(AccuracyCard(task, evaluation, accuracy, int(m["n"]), paper, same, multi_task, protocol, note))
    return cards


def card_difference_text(metadata: Mapping, key: str, task_metrics: Mapping) -> str | None:
    """Why an evaluation's figures differ from the model card's for the same images (`key`, e.g. 'utkface-test';
    the card's were measured when the model was made), or None when they agree to the precision shown (0.1%)."""
    stored = (metadata.get("metrics") or {}).get(key)
    if not isinstance(stored, Mapping):
        return None
    differ, faces_then, faces_now = [], None, None
    for task, now in task_metrics.items():
        then = stored.get(task)
        if not isinstance(then, Mapping) or not now.get("n") or then.get("accuracy") is None:
            continue
        measure = "three_groups_accuracy" if task == "race" and "three_groups_accuracy" in then else "accuracy"
        if now.get(measure) is None:
            continue
        if round(100 * float(now[measure]), 1) != round(100 * float(then[measure]), 1):
            differ.append(f"{display_name(task).lower()} {percent(now[measure])} (card {percent(then[measure])})")
        if then.get("n") != now.get("n"):
            faces_then, faces_now = then.get("n"), now.get("n")
    if not differ:
        return None
    if faces_then is not None and faces_now is not None:
        why = (
            f"the faces were found and aligned again ({int(faces_now):,} faces now, {int(faces_then):,} then: a "
            "change in the images or in the face finder changes which faces are scored)"
        )
    elif metadata.get("precision") == "bfloat16":
        why = "the network runs here in float32, where it was scored in bfloat16 when it was made: a few faces near a tie change answer"
    else:
        why = "the same faces went through another runtime's arithmetic: a few faces near a tie change answer"
    return f"This evaluation gives {joined(differ)}: {why}."


def summary_cards(
    summary: Mapping[str, Mapping[str, Mapping]], multi_task: bool, protocol: str | None = None
) -> list[AccuracyCard]:
    """Cards from a bundle's metadata["metrics"] ({evaluation: {task: {...}}}): test evaluations when there are
    any (else validation ones), one card per task and evaluation."""
    keys = [k for k in summary if k.endswith("-test")] or list(summary)
    return [card for key in sorted(keys) for card in accuracy_cards(key, summary[key], multi_task, protocol)]


PROTOCOL_TEXT = {
    "holdout": "On test images that training never saw (a slice of the training images chose when to stop).",
    "paper": (
        "The paper's protocol: one 90/10 split whose 10% both chose when to stop and gave the score, so the "
        "figures are optimistic."
    ),
}

ARCHITECTURE_TEXT = {
    "paper": "the paper's network (three convolution blocks, 2.4M weights)",
    "fast": "a smaller, faster network",
    "wide": "the faster network with 1.5 times its filters (about twice its time per face)",
}


def network_text(metadata: Mapping) -> str:
    """The network in words; for an ensemble, how many networks it averages and the time that costs."""
    architecture = str(metadata.get("architecture", "unknown"))
    members = (metadata.get("ensemble") or {}).get("members") if architecture == "ensemble" else None
    if isinstance(members, list) and members:
        kinds = joined([ARCHITECTURE_NAMES.get(str(m.get("architecture")), "another") for m in members])
        return (
            f"the average of {len(members)} trained networks ({kinds}), weighted per question; it takes the time "
            "of all of them for each face"
        )
    return ARCHITECTURE_TEXT.get(architecture, architecture)


@dataclass
class ModelCard:
    name: str  # the model's title: metadata["title"], else one made from what it is and when it was trained
    facts: list[tuple[str, str]]
    optimistic: bool
    multi_task: bool
    cards: list[AccuracyCard] = field(default_factory=list)
    description: str = ""  # metadata["description"], else one sentence made from the metadata
    folder: str = ""  # the bundle's folder name, for people who look for it on disk


def is_optimistic(metadata: Mapping) -> bool:
    return bool(metadata.get("optimistic")) or metadata.get("protocol") == "paper"


def model_title(metadata: Mapping) -> str:
    """metadata["title"] when the model has one, else e.g. 'Multi-task network (fast), trained 30 Nov 2026'."""
    if isinstance(metadata.get("title"), str) and metadata["title"].strip():
        return metadata["title"].strip()
    tasks = list(metadata.get("tasks", {}))
    kind = "Multi-task" if len(tasks) > 1 else f"{display_name(tasks[0])}-only" if tasks else "Single-task"
    architecture = str(metadata.get("architecture", ""))
    name = f"{kind} network"
    if architecture:
        name += f" ({ARCHITECTURE_NAMES.get(architecture, architecture)})"
    when = format_date(metadata.get("created"), short=True)
    return f"{name}, trained {when}" if when else name


def _datasets_text(metadata: Mapping) -> str:
    parts = []
    for d in metadata.get("datasets") or []:
        fmt = str(d.get("format", "")) if isinstance(d, Mapping) else ""
        title = dataset_title(fmt) if fmt != "folders" else f"image folders ({Path(str(d.get('root', ''))).name})"
        parts.append(f"{title} ({DATASET_LABELS[fmt]})" if fmt in DATASET_LABELS else title)
    return joined(parts)


def pseudo_labels_text(metadata: Mapping) -> str | None:
    """The model card's "Extra labels" (mtfer.train.pseudo): which data sets' training faces a teacher model gave which
    labels; None when the model trained on true labels only."""
    record = metadata.get("pseudo_labels")
    if not isinstance(record, list) or not record:
        return None
    parts, teachers, soft = [], set(), False
    for entry in record:
        if not isinstance(entry, Mapping):
            continue
        filled = {t: n for t, n in (entry.get("filled") or {}).items() if n}
        if not filled:
            continue
        fmt = str((entry.get("dataset") or {}).get("format", ""))
        labels = joined([display_name(t).lower() for t in filled])
        most = max(filled.values())
        up_to = "up to " if len(set(filled.values())) > 1 else ""
        parts.append(f"{labels} for {up_to}{most:,} {dataset_title(fmt) or fmt} faces")
        teacher = entry.get("teacher") or {}
        made = format_date(teacher.get("created"))
        if made:
            made += f", {datetime.fromisoformat(str(teacher['created'])):%H:%M}"
        # The teacher by its folder name and when it was made; a shipped model taught by the one shipped before it
        # (both in models/default) would otherwise read as its own teacher.
        name = Path(str(teacher.get("path") or "")).name
        who = f"the model {name}" if name and name != "default" else "an earlier model shipped with the app"
        teachers.add(who + (f" made {made}" if made else ""))
        soft = soft or entry.get("targets") == "soft"
    if not parts:
        return None
    how = "its probabilities" if soft else "its answers"
    text = joined(parts)
    return (
        f"{text[:1].upper() + text[1:]}, from {joined(sorted(teachers))} ({how}, where it was sure "
        "enough); training images only, never the ones it is scored on"
    )


def how_it_learned_text(metadata: Mapping) -> str:
    """One sentence on the labels this model learned from, from its metadata (never assumed)."""
    if pseudo_labels_text(metadata):
        return (
            "It learned from the data sets' own labels and from labels an earlier model filled in where a data set "
            "has none (see Extra labels below)."
        )
    return "It learned from the data sets' own labels only: each face taught the tasks its data set labels."


def no_history_text(metadata: Mapping) -> str:
    """Why a model shows no training curves: an ensemble was never trained itself; another bundle came without them."""
    if metadata.get("architecture") == "ensemble":
        return (
            f"This model was not trained itself: {network_text(metadata)}. Each of those networks has its own "
            "training curves."
        )
    return "This model folder has no training history (history.csv)."


def model_description(metadata: Mapping) -> str:
    """metadata["description"] when the model has one, else one sentence on what it reads and from which data."""
    if isinstance(metadata.get("description"), str) and metadata["description"].strip():
        return metadata["description"].strip()
    tasks = [display_name(t).lower() for t in metadata.get("tasks", {})]
    text = f"One network that reads {joined(tasks) or 'faces'} from a face"
    data = joined([dataset_title(str(d.get("format", ""))) for d in metadata.get("datasets") or []])
    return text + (f", taught with {data}." if data else ".")


def _machine_text(machine: object) -> str:
    """'x86_64 2 cpu' -> ' on a 2-core computer'; '' when not recorded."""
    found = re.search(r"(\d+)\s*cpu", str(machine or ""))
    return f" on a {found.group(1)}-core computer" if found else ""


def choice_title(kind: str, folder: str, metadata: Mapping) -> str:
    """A model to choose from, for people: 'Active model · Multi-task network (fast), trained 28 Nov 2026', and
    for a run its folder name too."""
    title = model_title(metadata) if metadata else folder
    if kind == "active":
        return f"Active model · {title}"
    if kind == "default":
        return f"Default model · {title}"
    word = "Model" if kind == "bundle" else "Run"
    return f"{word} {folder} · {title}" if metadata else f"{word} {folder}"


def training_time_text(metadata: Mapping, lineage: Lineage) -> str:
    """How long training took, over every run of the lineage when they are all known (the wall time docs/results.md reports)."""
    machine = _machine_text(metadata.get("machine"))
    if metadata.get("architecture") == "ensemble":  # its own config is its first member's: no lineage of its own
        return "none of its own (its networks were trained separately; see each of them)"
    own = lineage.stages[-1] if lineage.stages else None
    own_seconds = metadata.get("train_seconds")
    own_epochs = own.epochs if own else None
    epochs = f"{own_epochs} epochs" if own_epochs else ""
    if not lineage.continued:
        return f"{format_duration(own_seconds, 'minutes')}{machine}" + (f" ({epochs})" if epochs else "")
    runs_before = len(lineage.stages) - 1
    before = "an earlier run" if runs_before == 1 else f"{runs_before} earlier runs"
    total, total_epochs = lineage.total_seconds, lineage.total_epochs
    if total is not None:
        text = f"{format_duration(total, 'minutes')} in all{machine}"
        if total_epochs and runs_before == 1:
            first = lineage.stages[0].epochs
            return f"{text}: {total_epochs} epochs, {first} in an earlier run and {own_epochs} more in this one"
        if total_epochs:
            return f"{text}: {total_epochs} epochs over {runs_before + 1} runs, each continuing the one before"
        return f"{text}; this model continued {before}"
    return (
        f"{format_duration(own_seconds, 'minutes')} for its last {epochs or 'stage'}{machine}; it continued {before} whose "
        "time is not recorded with it"
    )


def race_groups_text(metadata: Mapping) -> str | None:
    """How the race answers cover UTKFace's five groups on test faces (metadata ``race_groups``, written when the
    "not sure" thresholds are chosen), as one sentence; None for a model without those figures."""
    section = metadata.get("race_groups") or {}
    key = next((k for k in sorted(section) if k.endswith("-test")), None)
    if key is None:
        return None
    text = f"On {dataset_title(evaluation_dataset(key))} test faces: {summary_text(section[key])}"
    paper = ((metadata.get("metrics") or {}).get(key) or {}).get("race", {}).get("three_groups_accuracy")
    return text + paper_measure_text(paper)


def model_card(metadata: Mapping, path: str | os.PathLike, lineage: Lineage | None = None) -> ModelCard:
    """What a non-technical reader needs to know about a model bundle, from its metadata.json (and, for the
    training time of a model that continued another, its lineage: :func:`mtfer.store.lineage.read_lineage`)."""
    lineage = read_lineage(path, metadata) if lineage is None else lineage
    tasks = list(metadata.get("tasks", {}))
    multi_task = len(tasks) > 1
    predicts = joined([display_name(t).lower() for t in tasks]).capitalize()
    predicts += ", all at once (multi-task)" if multi_task else " only (single-task)"
    samples = metadata.get("samples") or {}
    counts = joined([f"{n:,} {SAMPLE_TITLES.get(split, split)}" for split, n in samples.items()])
    protocol = str(metadata.get("protocol", "unknown"))
    facts = [
        ("Predicts", predicts),
        ("Taught with", _datasets_text(metadata) or "not recorded"),
        ("Faces used", counts or "not recorded"),
        ("How it was scored", PROTOCOL_TEXT.get(protocol, protocol)),
        ("Network", network_text(metadata)),
        ("Trained", format_date(metadata.get("created")) or "date not recorded"),
        ("Training time", training_time_text(metadata, lineage)),
    ]
    if (extra := pseudo_labels_text(metadata)) is not None:
        facts.insert(2, ("Extra labels", extra))
    if (race := race_groups_text(metadata)) is not None:
        facts.append(("Race beyond three groups", race))
    cards = summary_cards(metadata.get("metrics") or {}, multi_task, protocol)
    return ModelCard(
        model_title(metadata),
        facts,
        is_optimistic(metadata),
        multi_task,
        cards,
        model_description(metadata),
        Path(path).name,
    )
