"""The task plan and the options object: the one place that decides what runs, and the checks made at
the edge, so that the page, the API, the command line and the library agree."""

from __future__ import annotations

import pytest

from whisper_core.options import OptionsError, TranscribeOptions, make_options
from whisper_core.tasks import ENGLISH, NOT_REQUESTED, UNSUPPORTED, TaskPlan

TURBO = "this model was trained to transcribe only"


def test_both_tasks_skip_the_translation_of_english_speech_only():
    plan = TaskPlan.make("both")
    assert plan.tasks == ("transcribe", "translate") and plan.depends_on_language
    assert plan.runs("translate", "fr") and not plan.runs("translate", "en")
    assert plan.missing_translation("fr") is None and plan.missing_translation("en") == ENGLISH
    kept = TaskPlan.make("both", translate_english=True)
    assert kept.runs("translate", "en") and not kept.depends_on_language and kept.missing_translation("en") is None


def test_translation_alone_is_decoded_even_for_english_speech():
    plan = TaskPlan.make("translate")
    assert plan.runs("translate", "en") and not plan.depends_on_language
    assert plan.missing_translation("en") is None


def test_a_model_that_cannot_translate_runs_the_transcript_and_says_why():
    plan = TaskPlan.make("both", TURBO)
    assert plan.tasks == ("transcribe",) and not plan.runs("translate", "fr")
    assert plan.missing_translation("fr") == UNSUPPORTED
    assert TaskPlan.make("translate", TURBO).tasks == ()
    assert TaskPlan.make("transcribe").missing_translation("fr") == NOT_REQUESTED


def test_tasks_keep_one_order_and_wrong_modes_are_refused():
    assert TaskPlan.make(["translate", "transcribe"]).tasks == ("transcribe", "translate")
    for wrong in ("all", ["transcribe", "transcribe"], ["summarize"], []):
        with pytest.raises(ValueError, match="mode must be one of"):
            TaskPlan.make(wrong)


def test_options_are_parsed_once_into_a_frozen_object():
    options = make_options(temperature=0, beam_size=1, language="French", task="translate")
    assert options == TranscribeOptions(temperature=(0.0,), beam_size=None, language="fr", task="translate")
    assert options.for_task("transcribe").task == "transcribe" and options.for_task("translate") is options
    with pytest.raises(AttributeError):
        options.task = "transcribe"


@pytest.mark.parametrize("keywords, message", [
    ({"tusk": "transcribe"}, "unknown option"),
    ({"task": "summarize"}, "task must be"),
    ({"language": "klingon"}, "Unknown language"),
    ({"temperature": ()}, "at least one"),
    ({"temperature": "warm"}, "could not convert"),
    ({"beam_size": 0}, "beam_size must be"),
    ({"temperature": 0.0, "patience": 2.0}, "patience needs beam_size"),
    ({"length_penalty": 3.0}, "length_penalty must be"),
    ({"batch_size": 0}, "batch_size must be"),
    ({"language_per_chunk": True}, "needs batch_size"),
    ({"language_per_chunk": True, "batch_size": 8, "language": "fr"}, "give no language"),
])
def test_wrong_options_are_refused_at_the_edge_with_a_reason(keywords, message):
    with pytest.raises(OptionsError, match=message):
        make_options(**keywords)
