"""Where the tests find the NAB subset: GPUOPS_NAB_DIR, or ../shared/data/nab beside the repository."""

from __future__ import annotations

import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def nab_dir() -> Path:
    root = Path(os.environ.get("GPUOPS_NAB_DIR", REPO.parent / "shared" / "data" / "nab"))
    if not (root / "labels" / "combined_windows.json").is_file():
        raise FileNotFoundError(
            f"NAB subset not found at {root}: set GPUOPS_NAB_DIR to the folder holding data/ and labels/")
    return root
