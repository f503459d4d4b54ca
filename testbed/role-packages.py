#!/usr/bin/env python3
"""Print the Debian packages the roles install (every ``<role>_packages`` list in
roles/*/defaults/main.yml), one line, sorted: the test-bed image downloads them
at build time so that its hosts install without downloading."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def role_packages(roles: Path) -> list[str]:
    packages: set[str] = set()
    for defaults in sorted(roles.glob("*/defaults/main.yml")):
        role = defaults.parent.parent.name
        for key, value in (yaml.safe_load(defaults.read_text()) or {}).items():
            if key == f"{role}_packages" and isinstance(value, list):
                packages.update(str(p) for p in value)
    return sorted(packages)


if __name__ == "__main__":
    top = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]
    print(" ".join(role_packages(top / "roles")))
