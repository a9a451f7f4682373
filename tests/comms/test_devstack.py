"""The embedded stack starts wherever the checkout lives, including a private temp dir."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

from comms.devstack import DevStack


@pytest.mark.skipif(os.geteuid() != 0, reason="only root runs PostgreSQL as another user")
def test_the_stack_starts_under_a_private_directory_when_root() -> None:
    # mktemp -d makes 0700 directories owned by root: the PostgreSQL user must still get in
    # (regression: with only the uid switched it kept root's group and was denied)
    with tempfile.TemporaryDirectory() as private:
        assert Path(private).stat().st_mode & 0o077 == 0
        stack = DevStack(Path(private) / "checkout" / ".comms" / "stack")
        try:
            info = stack.up()
            assert info.database_url.startswith("postgresql+psycopg://")
            assert stack.status()["postgres"] == "running"
        finally:
            stack.destroy()
