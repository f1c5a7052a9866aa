"""Shared fixtures: the model (loaded once per test session) and the shared test audio."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


def shared_dir() -> Path:
    """../shared beside the project: skipped when absent, a failure where REQUIRE_SHARED=1."""
    if not (SHARED / "audio" / "manifest.json").is_file():
        if os.environ.get("REQUIRE_SHARED") == "1":
            pytest.fail(f"REQUIRE_SHARED=1 but {SHARED} has no audio/manifest.json")
        pytest.skip("../shared (test audio and reference outputs) is not beside this checkout")
    return SHARED


@pytest.fixture(scope="session")
def shared() -> Path:
    return shared_dir()


@pytest.fixture(scope="session")
def manifest(shared: Path) -> list[dict]:
    return json.loads((shared / "audio" / "manifest.json").read_text())


@pytest.fixture(scope="session")
def model():
    import whisper_core

    return whisper_core.load_model()
