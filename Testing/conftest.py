"""Shared pytest configuration: the repository root on sys.path and the real-data location."""

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

#: Real scanner data (../shared/data beside the repository unless IRONMAPPING_TEST_DATA is set).
TEST_DATA = Path(os.environ.get("IRONMAPPING_TEST_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Folder of the real scanner data sets; tests using it are skipped when it is absent."""
    if not TEST_DATA.is_dir():
        pytest.skip(f"real scanner data not found at {TEST_DATA} (set IRONMAPPING_TEST_DATA)")
    return TEST_DATA
