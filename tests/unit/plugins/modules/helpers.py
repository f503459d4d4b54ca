"""Run an Ansible module's main() in-process and capture its result."""

from __future__ import annotations

import json

import pytest
from ansible.module_utils.testing import patch_module_args


def run_module(module, args: dict, capsys, check_mode: bool = False) -> tuple[bool, dict]:
    """Return (failed, result) of ``module.main()`` called with ``args``."""
    if check_mode:
        args = {**args, "_ansible_check_mode": True}
    with patch_module_args(args), pytest.raises(SystemExit) as exc:
        module.main()
    result = json.loads(capsys.readouterr().out)
    return exc.value.code != 0, result
