"""Access to the scenario's hosts (podman containers named after the platforms)."""

from __future__ import annotations

import time

import pytest
import testinfra


def _host(name: str):
    # The scenario's containers carry the platform names; podman exec is much
    # faster than a module run per command.
    return testinfra.get_host(f"podman://{name}")


@pytest.fixture(scope="session")
def cm():
    return _host("cm")


@pytest.fixture(scope="session")
def hub():
    return _host("hub")


@pytest.fixture(scope="session")
def execute_nodes():
    return [_host("wn1"), _host("wn2")]


@pytest.fixture(scope="session")
def outsider():
    return _host("outsider")


def wait_for(probe, timeout: float, interval: float = 1.0):
    """Call ``probe`` until it returns something truthy; return that or the last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
