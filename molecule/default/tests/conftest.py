"""Access to the scenario's hosts through molecule's inventory."""

from __future__ import annotations

import os
import time

import pytest
import testinfra


def _host(name: str):
    return testinfra.get_host(f"ansible://{name}", ansible_inventory=os.environ["MOLECULE_INVENTORY_FILE"])


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
