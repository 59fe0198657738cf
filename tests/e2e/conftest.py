"""Shared fixtures for the end-to-end tests (real Envoy, real MCP server, real processes)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from extauthz.demo.stack import Stack
from extauthz.demo.tokens import TokenIssuer


@pytest.fixture(scope="session")
def tokens() -> TokenIssuer:
    """One RSA-keyed JWT issuer for the whole session (Envoy configs are rendered with its JWKS)."""
    return TokenIssuer()


@pytest.fixture(scope="session")
def other_tokens() -> TokenIssuer:
    """An issuer with the same iss/aud but a different key: its tokens must fail verification."""
    return TokenIssuer()


@pytest.fixture
def stack_factory(tokens: TokenIssuer) -> Iterator[Callable[..., Stack]]:
    """Start Stacks inside a test; every one started is stopped at teardown."""
    started: list[Stack] = []

    def start(policy_path: Any = None, **kwargs: Any) -> Stack:
        kwargs.setdefault("tokens", tokens)
        stack = Stack(policy_path, **kwargs)
        stack.start()
        started.append(stack)
        return stack

    yield start
    for stack in reversed(started):
        stack.stop()
