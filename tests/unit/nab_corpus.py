"""Where the tests find the NAB subset: GPUOPS_NAB_DIR, or ../shared/data/nab beside the repository. The corpus
is not part of the repository; where it is absent the tests that need it are skipped with the reason, unless
GPUOPS_NAB_DIR names a folder explicitly, in which case a missing corpus is an error."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def nab_dir() -> Path:
    explicit = os.environ.get("GPUOPS_NAB_DIR")
    root = Path(explicit) if explicit else REPO.parent / "shared" / "data" / "nab"
    if not (root / "labels" / "combined_windows.json").is_file():
        message = f"NAB subset not found at {root}: set GPUOPS_NAB_DIR to the folder holding data/ and labels/"
        if explicit:
            raise FileNotFoundError(message)
        pytest.skip(message)
    return root
