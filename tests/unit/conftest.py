"""Make the project's plugins importable the way Ansible loads them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import ansible.module_utils

PLUGINS = Path(__file__).resolve().parents[2] / "plugins"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# Modules import their helpers as ansible.module_utils.<name>, as Ansible
# ships them to the host; register ours under that name.
for util in sorted((PLUGINS / "module_utils").glob("*.py")):
    mod = _load(f"ansible.module_utils.{util.stem}", util)
    setattr(ansible.module_utils, util.stem, mod)

for kind in ("modules", "filter"):
    for plugin in sorted((PLUGINS / kind).glob("*.py")):
        _load(f"condorlab_{kind}_{plugin.stem}", plugin)
