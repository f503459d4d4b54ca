"""requirements.yml names every collection the project uses, at the version `make deps` installs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import ansible_collections
import yaml

ROOT = Path(__file__).resolve().parents[2]
# A module, lookup, filter or test named by its fully qualified name: a task's
# key, lookup('x.y.z')/query('x.y.z'), "| x.y.z" or "is x.y.z".
NAME = r"([a-z][a-z0-9_]*)\.([a-z][a-z0-9_]*)\.[a-z][a-z0-9_]*"
FQCN = [
    re.compile(rf"^\s*-?\s*{NAME}:"),
    re.compile(rf"\b(?:lookup|query)\(\s*['\"]{NAME}['\"]"),
    re.compile(rf"(?:\||\bis)\s*{NAME}\b"),
]
SOURCES = ["roles", "playbooks", "testbed", "molecule", "site.yml"]


def used_collections() -> set[str]:
    found = set()
    for source in SOURCES:
        path = ROOT / source
        files = [path] if path.is_file() else [*path.rglob("*.yml"), *path.rglob("*.j2")]
        for file in files:
            for line in file.read_text().splitlines():
                if line.lstrip().startswith("#"):
                    continue
                for pattern in FQCN:
                    found.update(f"{namespace}.{collection}" for namespace, collection in pattern.findall(line))
    return found - {"ansible.builtin"}


def installed_version(name: str) -> str:
    namespace, collection = name.split(".")
    for base in ansible_collections.__path__:
        manifest = Path(base) / namespace / collection / "MANIFEST.json"
        if manifest.exists():
            return json.loads(manifest.read_text())["collection_info"]["version"]
    return "not installed"


def test_every_used_collection_is_listed_with_the_installed_version():
    listed = {c["name"]: c["version"] for c in yaml.safe_load((ROOT / "requirements.yml").read_text())["collections"]}
    used = used_collections()
    assert "community.crypto" in used, "the scan finds the collections the roles use"
    assert sorted(used - set(listed)) == []
    assert {name: installed_version(name) for name in listed} == listed
