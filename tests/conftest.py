"""Fixtures of every test package; shared helpers are in :mod:`tests.helpers`."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers.configs import hydra_on_conf


@pytest.fixture(scope="module")
def hydra_conf() -> Iterator[None]:
    """Hydra initialised on ``conf/`` for a whole test module (composing many configs, multirun loading)."""
    with hydra_on_conf():
        yield
