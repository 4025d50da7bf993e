"""mtfer: multi-task facial emotion recognition (emotion, gender, race and age group from one CNN)."""

from mtfer.core.tasks import TASK_NAMES, TASKS

__all__ = ["TASKS", "TASK_NAMES"]
__version__ = "0.1.0"
