from __future__ import annotations

from collections.abc import Iterator

import pytest

from extauthz.shared.testing import RedisProcess


@pytest.fixture
def redis_server() -> Iterator[RedisProcess]:
    r = RedisProcess().start()
    yield r
    r.close()

