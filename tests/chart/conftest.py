"""pytest fixtures for the chart checks (helpers live in chart_helpers.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from chart_helpers import VALUE_SETS, load_values


@pytest.fixture(params=VALUE_SETS)
def value_set(request: pytest.FixtureRequest) -> Iterator[tuple[str, dict[str, Any]]]:
    yield request.param, load_values(request.param)
