# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters that turn inventory data into HTCondor configuration.

Each filter is documented in its own file beside this one (condor_config_lines.yml,
condor_reset_transform.yml), so that ansible-doc -t filter NAME shows its page.
"""

from __future__ import annotations

import math
import re

from ansible.errors import AnsibleFilterError

KNOB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")
ATTR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
# Job attributes a transform that resets what a submitter set never touches:
# the schedd's own state, on which held and spooled submissions rely.
NEVER_RESET = ("JobStatus",)


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


def condor_reset_transform(attrs) -> list[str]:
    """Job transform statements that put each attribute back to its value (SET), or delete it (value None)."""
    if not isinstance(attrs, dict):
        raise AnsibleFilterError(
            f"condor_reset_transform: expected a mapping of job attribute names to values, got {type(attrs).__name__}"
        )
    statements = []
    for name, value in attrs.items():
        if not isinstance(name, str) or not ATTR_NAME.fullmatch(name):
            raise AnsibleFilterError(
                f"condor_reset_transform: {name!r} is not a ClassAd attribute name; "
                "use letters, digits and '_', not starting with a digit"
            )
        if name.lower() in (never.lower() for never in NEVER_RESET):
            raise AnsibleFilterError(
                f"condor_reset_transform: {name} must not be reset at submission: the schedd sets it, and held "
                "and spooled submissions rely on it; remove it from the list"
            )
        if value is None:
            statements.append(f"DELETE {name}")
        elif isinstance(value, int) and not isinstance(value, bool):
            statements.append(f"SET {name} {int(value)}")
        elif isinstance(value, float) and math.isfinite(value):
            statements.append(f"SET {name} {float(value)!r}")
        else:
            raise AnsibleFilterError(
                f"condor_reset_transform: the value of {name} is {value!r}; give the number condor_submit sets "
                "(0, 0.0) or null to delete the attribute"
            )
    return statements


class FilterModule:
    def filters(self):
        return {"condor_config_lines": condor_config_lines, "condor_reset_transform": condor_reset_transform}
