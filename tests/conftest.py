import os
import pathlib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
os.environ.setdefault("FLOWPOST_DATA", str((ROOT.parent / "shared" / "data").resolve()))


@pytest.fixture
def x64():
    """Run a test in float64 (restored afterwards)."""
    import jax

    jax.config.update("jax_enable_x64", True)
    try:
        yield
    finally:
        jax.config.update("jax_enable_x64", False)
