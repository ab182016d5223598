"""Unit tests run in one process: a test that configures logging (a CLI's main(), a
service's configure()) must not leave its stream, maybe closed by pytest's capture by now,
or its warnings capture behind for the next test."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
import structlog


@pytest.fixture(autouse=True)
def _logging_restored() -> Iterator[None]:
    yield
    structlog.reset_defaults()
    structlog.contextvars.clear_contextvars()
    logging.getLogger().handlers.clear()
    logging.captureWarnings(False)
