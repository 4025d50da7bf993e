"""The four tasks, their class names in the model's order, the paper's loss weights, and the
conversions from every data set's label codes. Nothing else in the code spells a class list."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Task:
    name: str
    classes: tuple[str, ...]
    loss_weight: float  # the paper's weight in the total loss

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def index(self, label: str) -> int:
        """Class index of `label` (a class name of this task)."""
        try:
            return self.classes.index(label)
        except ValueError:
            raise ValueError(f"{label!r} is not a {self.name} class; expected one of {list(self.classes)}") from None


EMOTION = Task("emotion", ("surprise", "fear", "disgust", "happy", "sad", "angry", "neutral"), 2.0)
GENDER = Task("gender", ("male", "female", "unsure"), 0.1)
# Race: the paper's three classes, in its order, then "other": every face of a group the three do not cover (UTKFace's
# Indian and Others faces teach it). Without it such faces had no answer to learn and came out as one of the three
# groups, confidently. Bundles from before "other" existed (three classes) still load: see LEGACY_CLASSES.
RACE = Task("race", ("caucasian", "african_american", "asian", "other"), 1.5)
AGE = Task("age", ("0-3", "4-19", "20-39", "40-69", "70+"), 4.0)

TASKS: dict[str, Task] = {t.name: t for t in (EMOTION, GENDER, RACE, AGE)}
TASK_NAMES: tuple[str, ...] = tuple(TASKS)
PAPER_LOSS_WEIGHTS: dict[str, float] = {t.name: t.loss_weight for t in TASKS.values()}


# Class and task names as people write them (charts, tables, the app); the identifiers above stay the contract.
TASK_TITLES: dict[str, str] = {"emotion": "Emotion", "gender": "Gender", "race": "Race", "age": "Age group"}
CLASS_TITLES: dict[str, dict[str, str]] = {
    "emotion": {c: c.capitalize() for c in EMOTION.classes},
    "gender": {"male": "Male", "female": "Female", "unsure": "Unsure"},
    "race": {"caucasian": "Caucasian", "african_american": "African American", "asian": "Asian", "other": "Other"},
    "age": {
        "0-3": "0-3 years",
        "4-19": "4-19 years",
        "20-39": "20-39 years",
        "40-69": "40-69 years",
        "70+": "70+ years",
    },
}
# Classes that no available data set can teach (UTKFace has no "unsure" gender; FER2013 no attributes): hidden
# from charts, tables and confusion matrices unless a data set carries them.
UNTAUGHT_CLASSES: dict[str, tuple[str, ...]] = {"gender": ("unsure",)}


# Class lists that older bundles carry: a prefix of today's list (classes are only ever appended). Their networks
# give no probability to the appended classes; mtfer.core.backends pads their outputs with zeros.
LEGACY_CLASSES: dict[str, tuple[str, ...]] = {"race": RACE.classes[:3]}


def display_name(task: str, label: str | None = None) -> str:
    """'Race' for a task, 'African American' for one of its classes; unknown labels are returned tidied."""
    if label is None:
        return TASK_TITLES.get(task, task.replace("_", " ").capitalize())
    return CLASS_TITLES.get(task, {}).get(label, label.replace("_", " "))


def get_task(name: str) -> Task:
    try:
        return TASKS[name]
    except KeyError:
        raise ValueError(f"unknown task {name!r}; expected one of {list(TASKS)}") from None


# --- FER2013 -------------------------------------------------------------------------------------
# The original CSV codes: 0 Angry, 1 Disgust, 2 Fear, 3 Happy, 4 Sad, 5 Surprise, 6 Neutral.
FER2013_CSV_CODES: dict[int, int] = {
    0: EMOTION.index("angry"),
    1: EMOTION.index("disgust"),
    2: EMOTION.index("fear"),
    3: EMOTION.index("happy"),
    4: EMOTION.index("sad"),
    5: EMOTION.index("surprise"),
    6: EMOTION.index("neutral"),
}
# The CSV's Usage column -> our split names.
FER2013_USAGE_SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "test", "PrivateTest": "test"}

# Folder names people use for emotion classes (FER2013 image folders, AffectNet-style trees ...).
EMOTION_SYNONYMS: dict[str, str] = {
    "surprise": "surprise",
    "surprised": "surprise",
    "suprise": "surprise",
    "fear": "fear",
    "fearful": "fear",
    "afraid": "fear",
    "scared": "fear",
    "disgust": "disgust",
    "disgusted": "disgust",
    "contempt": "disgust",
    "happy": "happy",
    "happiness": "happy",
    "joy": "happy",
    "smile": "happy",
    "sad": "sad",
    "sadness": "sad",
    "angry": "angry",
    "anger": "angry",
    "mad": "angry",
    "neutral": "neutral",
    "calm": "neutral",
}


def emotion_from_name(name: str) -> int | None:
    """Emotion index for a folder or label name (case and synonyms tolerated), None when unknown."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    canonical = EMOTION_SYNONYMS.get(key)
    return None if canonical is None else EMOTION.index(canonical)


# --- RAF-DB --------------------------------------------------------------------------------------
# list_patition_label.txt: labels 1..7 in EMOTION order. manu_attri lines 6-8: gender 0 male,
# 1 female, 2 unsure; race 0 Caucasian, 1 African-American, 2 Asian; age 0..4 in AGE order.
def rafdb_emotion(label: int) -> int:
    if not 1 <= label <= EMOTION.num_classes:
        raise ValueError(f"RAF-DB emotion label must be 1..{EMOTION.num_classes}, got {label}")
    return label - 1


RAFDB_ATTRIBUTE_CODES: dict[str, int] = {"gender": 3, "race": 3, "age": 5}  # codes per attribute: 0..n-1


def rafdb_attribute(task: str, code: int) -> int:
    if task not in RAFDB_ATTRIBUTE_CODES:
        raise ValueError("RAF-DB attributes are gender, race and age")
    n = RAFDB_ATTRIBUTE_CODES[task]
    if not 0 <= code < n:
        raise ValueError(f"RAF-DB {task} code must be 0..{n - 1}, got {code}")
    return code  # the first n classes of the task, in the same order


# --- UTKFace -------------------------------------------------------------------------------------
UTKFACE_GENDER: dict[int, int] = {0: GENDER.index("male"), 1: GENDER.index("female")}
# 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others. Indian and Others faces are the race task's "other" class.
UTKFACE_RACE: dict[int, int] = {
    0: RACE.index("caucasian"),
    1: RACE.index("african_american"),
    2: RACE.index("asian"),
    3: RACE.index("other"),
    4: RACE.index("other"),
}
RACE_OTHER = RACE.index("other")
# UTKFace's five race groups as its file names code them, in people's words: the three the race task knows and
# the two its "other" class stands for.
UTKFACE_RACE_GROUPS: dict[int, str] = {0: "White", 1: "Black", 2: "Asian", 3: "Indian", 4: "Others"}

# Upper bounds (inclusive, in years) of the age groups in AGE order; the last is open.
AGE_GROUP_UPPER_YEARS: tuple[int, ...] = (3, 19, 39, 69)


def age_group(years: int) -> int:
    """Age in years -> index of the AGE group (0-3, 4-19, 20-39, 40-69, 70+)."""
    if years < 0:
        raise ValueError(f"age must be >= 0 years, got {years}")
    for i, upper in enumerate(AGE_GROUP_UPPER_YEARS):
        if years <= upper:
            return i
    return len(AGE_GROUP_UPPER_YEARS)


# The data-set formats mtfer reads, one reader each in mtfer.datasets. Spelled here, beside every data set's label
# codes, so that the command line lists them without importing the readers (pandas: a second on a busy machine).
FORMATS: tuple[str, ...] = ("fer2013", "fer2013-csv", "rafdb", "utkface", "folders")
