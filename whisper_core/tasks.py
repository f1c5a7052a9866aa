"""Which tasks a request runs: the one place that decides, so that the page, the API, the command line
and the library agree. A plan is made from what was asked and what the model can do; once the language
is known it says whether the translation is decoded, and why a result holds none."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .options import TASKS

# How people ask: the page's and the API's modes, the command line's --task.
MODES: dict[str, tuple[str, ...]] = {
    "both": ("transcribe", "translate"),
    "transcribe": ("transcribe",),
    "translate": ("translate",),
}

# Why a result holds no translation.
NOT_REQUESTED = "not requested"
ENGLISH = "english"
UNSUPPORTED = "unsupported"


@dataclass(frozen=True)
class TaskPlan:
    """What was asked, and what will be decoded. English speech is not translated when its transcript is
    asked for too (the translation would repeat it), unless `translate_english`."""

    requested: tuple[str, ...]
    cannot_translate: str | None = None  # why the model cannot translate, or None when it can
    translate_english: bool = False

    @classmethod
    def make(cls, mode: str | Sequence[str], cannot_translate: str | None = None, *,
             translate_english: bool = False) -> TaskPlan:
        """A plan from a mode ("both") or a list of tasks; raises ValueError for anything else."""
        requested = MODES.get(mode) if isinstance(mode, str) else tuple(mode)
        if not requested or any(task not in TASKS for task in requested) or len(set(requested)) < len(requested):
            raise ValueError(f"mode must be one of {', '.join(MODES)}, not {mode!r}")
        return cls(tuple(t for t in TASKS if t in requested), cannot_translate, translate_english)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the model can run of those asked; may be empty (a translation the model cannot do)."""
        if self.cannot_translate is None:
            return self.requested
        return tuple(t for t in self.requested if t != "translate")

    @property
    def depends_on_language(self) -> bool:
        """Whether a task may be dropped once the language is known (so it must be detected first)."""
        return "translate" in self.tasks and "transcribe" in self.requested and not self.translate_english

    def runs(self, task: str, language: str | None) -> bool:
        """Whether `task` is decoded once the speech's language is known."""
        if task not in self.tasks:
            return False
        english_twice = task == "translate" and language == "en" and "transcribe" in self.requested
        return not english_twice or self.translate_english

    def missing_translation(self, language: str | None) -> str | None:
        """Why the results hold no translation (NOT_REQUESTED, UNSUPPORTED, ENGLISH), or None when they do."""
        if "translate" not in self.requested:
            return NOT_REQUESTED
        if self.cannot_translate is not None:
            return UNSUPPORTED
        return None if self.runs("translate", language) else ENGLISH
