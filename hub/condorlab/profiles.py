"""The options form and the start request: the profiles a user may start, from the user groups.

The user groups come from USER_GROUPS_FILE, which the inventory's filter
writes (contract.py): each with its Unix groups, its HTCondor accounting group
and its profiles. A user belongs to a group through membership of one of its
Unix groups. A start request names a profile ("group/profile") and may ask for
fewer CPUs or less memory than the profile offers, never more; the checks are
the contract's, the same the job helper makes again.
"""

from __future__ import annotations

import html
import re
import time

from . import contract

OPTION_KEYS = {"profile", "cpus", "memory"}

# The longest value each start option may have, in characters: a profile is
# "group/profile" by the contract's name rules, cpus a whole number, memory a
# size such as "1.5 GiB". A start request has at most MAX_OPTIONS options.
# Checked before anything reads, stores or quotes the values: JupyterHub keeps
# a request's options in its database and logs what a refusal says.
OPTION_MAX_LENGTH = {"profile": contract.PROFILE_KEY_MAX, "cpus": 16, "memory": 32}
MAX_OPTIONS = 8
# An option name a message shows as it is; any other is quoted and cut short.
OPTION_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,19}$")


class OptionsError(ValueError):
    """A start request the user's groups do not allow; the message says why and what is allowed."""


def check_bounds(options) -> dict:
    """The start options if they are a mapping of a few short values, or OptionsError (a short message)."""
    if not isinstance(options, dict):
        raise OptionsError("the start options must be a mapping")
    if len(options) > MAX_OPTIONS:
        raise OptionsError(
            f"{len(options)} start options; a session takes at most {len(OPTION_KEYS)} (profile, cpus and memory)"
        )
    for key, value in options.items():
        limit = OPTION_MAX_LENGTH.get(key)
        if limit is None or value is None:
            continue  # an unknown option is refused by name (resolve)
        if isinstance(value, (list, dict)):
            kind = "list" if isinstance(value, list) else "mapping"
            raise OptionsError(f"{key} must be text or a number, not a {kind}")
        try:
            length = len(value if isinstance(value, str) else str(value))
        except ValueError:  # an integer too long to print
            length = limit + 1
        if length > limit:
            raise OptionsError(f"{key} {contract.quoted(value)} is longer than the {limit} characters it may have")
    return options


def resolve(user_groups: list[dict], unix_groups: set[str], options: dict) -> dict:
    """The session a start request asks for, within the user's groups' limits, or OptionsError."""
    check_bounds(options)
    unknown = sorted(set(options) - OPTION_KEYS)
    if unknown:
        shown = ", ".join(key if OPTION_NAME.fullmatch(key) else contract.quoted(key, 20) for key in unknown[:3])
        if len(unknown) > 3:
            shown += f" and {len(unknown) - 3} more"
        raise OptionsError(
            f"unknown start option(s) {shown}; a session takes profile, cpus and memory "
            "(the accounting group follows from your user group)"
        )
    available = contract.choices(user_groups, unix_groups)
    if not available:
        raise OptionsError("you belong to none of the user groups that may start sessions")
    wanted = options.get("profile") or contract.key_of(*available[0])
    group_name, _, profile_name = str(wanted).partition("/")
    try:
        return contract.resolve(
            user_groups, unix_groups, group_name, profile_name, options.get("cpus"), options.get("memory")
        )
    except contract.ContractError as exc:
        raise OptionsError(str(exc)) from None


def availability(profile: dict, share) -> str:
    """Whether a session of this profile could start now, from the share's state ('' when unknown)."""
    if share is None or not share.slots:
        return ""
    cpus, memory = profile["cpus"], profile["memory_mb"]
    if share.fits_now(cpus, memory):
        return "starts now"
    if not share.fits_ever(cpus, memory):
        return "too large for the interactive share"
    return "waits: the interactive share is full" + (" (may use a batch slot)" if profile.get("fallback") else "")


def last_end_notice(last_end: dict) -> str:
    """The form's note on how the user's last session ended, when the user did not end it ('' otherwise)."""
    if not last_end or not last_end.get("message"):
        return ""
    when = time.strftime("%H:%M:%S %Z", time.localtime(float(last_end.get("time") or 0)))
    return (
        f'<div class="alert alert-warning" role="alert" id="condorlab-last-end">Your last session ended at {when}: '
        f"{html.escape(str(last_end['message']))}. Start a new one below.</div>\n"
    )


def form_html(available: list[tuple[dict, dict]], share=None) -> str:
    """The options form: the user's profiles (with whether each could start now), and optional smaller requests."""
    if not available:
        return "<p>You belong to none of the user groups that may start sessions.</p>"
    options = "\n".join(
        f'<option value="{html.escape(contract.key_of(g, p))}">'
        f"{html.escape(g['name'])}: {html.escape(p['label'])}"
        f"{''.join(f' — {note}' for note in [availability(p, share)] if note)}</option>"
        for g, p in available
    )
    return f"""
<div class="form-group">
  <label for="condorlab-profile">Profile</label>
  <select class="form-control" id="condorlab-profile" name="profile">
{options}
  </select>
</div>
<div class="form-group">
  <label for="condorlab-cpus">CPUs (optional, up to the profile's)</label>
  <input class="form-control" id="condorlab-cpus" name="cpus" type="number" min="1" placeholder="the profile's">
</div>
<div class="form-group">
  <label for="condorlab-memory">Memory (optional, up to the profile's, e.g. 1GB)</label>
  <input class="form-control" id="condorlab-memory" name="memory" type="text" placeholder="the profile's">
</div>
"""
