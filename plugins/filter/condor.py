# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn inventory data into HTCondor configuration."""

from __future__ import annotations

import re

from ansible.errors import AnsibleFilterError

DOCUMENTATION = r"""
name: condor_config_lines
short_description: Render a dict of HTCondor configuration knobs as config-file lines
description:
  - Turns a mapping of knob names to values into C(NAME = value) lines, sorted
    by name, for a file in C(/etc/condor/config.d).
  - Booleans become C(True)/C(False), lists are joined with C(", "), None
    leaves the knob out.
  - Refuses knob names that HTCondor would not parse and values that would
    break the file (newlines), naming the knob and what is expected.
positional: _input
options:
  _input:
    description: Mapping of knob name to value.
    type: dict
    required: true
"""

EXAMPLES = r"""
- name: Render the condorlab knobs
  ansible.builtin.debug:
    msg: "{{ {'NEGOTIATOR_INTERVAL': 2, 'RunBenchmarks': false} | condor_config_lines }}"
"""

RETURN = r"""
_value:
  description: The configuration lines, one knob a line.
  type: list
  elements: str
"""

KNOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def condor_config_value(name: str, value) -> str:
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, (list, tuple)):
        return ", ".join(condor_config_value(name, item) for item in value)
    if isinstance(value, str):
        if "\n" in value or "\r" in value:
            raise AnsibleFilterError(
                f"condor_config_lines: the value of {name} contains a line break; "
                "HTCondor knobs are one line (use a list for several items)"
            )
        value = value.strip()
        if value.endswith("\\"):
            raise AnsibleFilterError(
                f"condor_config_lines: the value of {name} ends with a backslash, which would continue it "
                "onto the next line of the file; remove the trailing backslash"
            )
        return value
    raise AnsibleFilterError(
        f"condor_config_lines: the value of {name} is a {type(value).__name__}; "
        "expected a string, number, boolean or list"
    )


def condor_config_lines(knobs) -> list[str]:
    if not isinstance(knobs, dict):
        raise AnsibleFilterError(
            f"condor_config_lines: expected a mapping of knob names to values, got {type(knobs).__name__}"
        )
    lines = []
    for name in sorted(knobs, key=str):
        if not isinstance(name, str) or not KNOB_NAME.fullmatch(name):
            raise AnsibleFilterError(
                f"condor_config_lines: {name!r} is not a valid HTCondor knob name; "
                "use letters, digits, '_' and '.', not starting with a digit"
            )
        value = knobs[name]
        if value is None:
            continue
        lines.append(f"{name} = {condor_config_value(name, value)}".rstrip())
    return lines


class FilterModule:
    def filters(self):
        return {"condor_config_lines": condor_config_lines}
