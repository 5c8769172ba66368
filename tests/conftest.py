"""Shared test fixtures: paths to the reference data, a CLI runner, thread economy for the 2-core CI."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REFERENCE = Path(__file__).resolve().parent / "reference"  # copied from MMPose runs; see its README.md
E2E = REFERENCE / "e2e"  # MMPose's end-to-end reference: images, boxes, the small HRNet checkpoint, its results
E2E_PRESET = Path(__file__).resolve().parent / "presets" / "e2e_small_hrnet.yaml"  # that small HRNet as a preset

os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def reference_dir() -> Path:
    """The folder of numbers produced by MMPose itself (tests/reference)."""
    if not REFERENCE.is_dir():
        pytest.fail(f"reference data not found at {REFERENCE}")
    return REFERENCE


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep downloads and synthetic caches out of the user's home."""
    monkeypatch.setenv("POSECLI_CACHE", str(tmp_path_factory.getbasetemp() / "posecli-cache"))
