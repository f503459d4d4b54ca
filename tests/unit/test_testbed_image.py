"""The test-bed image holds every Debian package the roles install (testbed/role-packages.py), so
that its hosts install them without downloading."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("role_packages", ROOT / "testbed" / "role-packages.py")
role_packages = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(role_packages)


def apt_tasks(tasks):
    for task in tasks or []:
        for key in ("block", "rescue", "always"):
            yield from apt_tasks(task.get(key))
        if "ansible.builtin.apt" in task:
            yield task["ansible.builtin.apt"]


def test_every_apt_task_installs_its_role_s_package_list():
    """Each role installs Debian packages only from its own <role>_packages list, the one the image reads."""
    seen = 0
    for file in sorted(ROOT.glob("roles/*/tasks/*.yml")):
        role = file.parts[-3]
        for apt in apt_tasks(yaml.safe_load(file.read_text())):
            if "name" not in apt:
                continue
            seen += 1
            assert re.fullmatch(rf"\{{\{{ {role}_packages \}}\}}", str(apt["name"])), (file, apt["name"])
    assert seen >= 8


def test_the_image_downloads_the_roles_packages_and_no_pip_requirement():
    packages = role_packages.role_packages(ROOT / "roles")
    for expected in ("condor", "slapd", "sssd-ldap", "node-configurable-http-proxy", "prometheus", "nftables"):
        assert expected in packages
    assert not [p for p in packages if "==" in p], "pip requirements are not Debian packages"
    assert packages == sorted(set(packages))
