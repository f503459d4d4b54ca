"""Who may use which accounting group on the access point.

The members of each user group's Unix groups (the site's directory, through
SSSD, or local accounts) may submit with that group's accounting group; the
access point's AssignAccountingGroup transform reads them from a map file of
lines ``* <user> <group>[,<group>...]``, the default group first.

Two writers produce the same file from the same function (``map_text``): the
htcondor role at a site.yml run (through the ``condorlab_accounting_map_text``
filter, from ``getent`` on the access point) and ``condorlab-membership``, run
by a systemd timer on the access point, which rebuilds the map from the
directory and reconfigures the schedd only when the map changed. A user added
to a Unix group can start sessions, and a removed one no longer can, within
the timer's period plus SSSD's cache time, without a site.yml run.
"""

from __future__ import annotations

import argparse
import grp
import json
import logging
import os
import pwd
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Mapping
from typing import NamedTuple

from . import contract

log = logging.getLogger("condorlab.membership")

ACCOUNTING_MAP = "/etc/condor/condorlab-accounting.map"

# Any name a directory may hold that can go in a map line (no blanks, no separators);
# only those of contract.USER_NAME get an accounting group.
DIRECTORY_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}\$?$")

HEADER = """\
# Users of the access point and the accounting groups they may use, the
# default first: the members of each user group's Unix groups, supplementary
# or primary (condorlab_user_groups). A job that asks for another group is
# refused. Written by site.yml and, as the directory changes, by
# condorlab-membership.timer; edits here are overwritten.
"""


class Skipped(NamedTuple):
    """A member that gets no accounting group, and why (reason "invalid" or "not-a-hub-user")."""

    user: object
    unix_group: str
    reason: str

    @property
    def invalid(self) -> bool:
        return self.reason == "invalid"

    @property
    def why(self) -> str:
        if self.invalid:
            return "not a Unix user name"
        return f"the hub accepts user names of {contract.USER_NAME_RULE} characters only"


def accounting(user_groups: list[dict], members: Mapping[str, Iterable[str]]) -> tuple[dict, list[Skipped]]:
    """Each user's accounting groups in inventory order, and the members that get none.

    ``user_groups`` are normalised (contract.USER_GROUPS_FILE); ``members``
    maps a Unix group to the names of its members. A member whose name cannot
    go in a map line is skipped as ``invalid``; one the hub's user name rule
    refuses (Admin, host$) as ``not-a-hub-user``: it could never log in.
    """
    allowed: dict[str, list[str]] = {}
    skipped: list[Skipped] = []
    for group in user_groups:
        for unix_group in group["unix_groups"]:
            for user in members.get(unix_group) or ():
                if not isinstance(user, str) or not DIRECTORY_NAME.match(user):
                    skipped.append(Skipped(user, unix_group, "invalid"))
                elif not contract.is_user_name(user):
                    skipped.append(Skipped(user, unix_group, "not-a-hub-user"))
                else:
                    groups = allowed.setdefault(user, [])
                    if group["accounting_group"] not in groups:
                        groups.append(group["accounting_group"])
    return dict(sorted(allowed.items())), skipped


def map_lines(allowed: Mapping[str, list[str]]) -> list[str]:
    return [f"* {user} {','.join(groups)}" for user, groups in sorted(allowed.items())]


def map_text(allowed: Mapping[str, list[str]]) -> str:
    """The whole map file: the same bytes from site.yml and from the timer."""
    return HEADER + "".join(line + "\n" for line in map_lines(allowed))


def read_map(text: str) -> dict[str, list[str]]:
    """The users and groups of a map file's text (comments and blank lines ignored)."""
    allowed = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 3 and fields[0] == "*":
            allowed[fields[1]] = fields[2].split(",")
    return allowed


class UnknownGroups(Exception):
    """Unix groups this host cannot resolve now (SSSD down or restarting, or not in the directory)."""


def members_here(unix_groups: Iterable[str]) -> dict[str, list[str]]:
    """The members of these Unix groups as this host resolves them (NSS: files, SSSD).

    Supplementary members, and the users whose primary group it is among the
    accounts NSS enumerates (local ones; SSSD does not enumerate by default).
    Raises UnknownGroups if any cannot be resolved: an empty answer from a
    directory that is briefly away must not empty the map.
    """
    wanted = set(unix_groups)
    found: dict[str, list[str]] = {}
    by_gid: dict[int, str] = {}
    unknown = []
    for name in sorted(wanted):
        try:
            entry = grp.getgrnam(name)
        except KeyError:
            unknown.append(name)
            continue
        found[name] = list(entry.gr_mem)
        by_gid[entry.gr_gid] = name
    if unknown:
        raise UnknownGroups(", ".join(unknown))
    for account in pwd.getpwall():
        name = by_gid.get(account.pw_gid)
        if name and account.pw_name not in found[name]:
            found[name].append(account.pw_name)
    return found


def write_atomically(path: str, text: str, mode: int = 0o644) -> None:
    directory = os.path.dirname(path) or "."
    handle, temporary = tempfile.mkstemp(dir=directory, prefix=".condorlab-map.")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.unlink(temporary)
        raise


def _read(path: str) -> str | None:
    try:
        with open(path) as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def sync(
    map_path: str,
    user_groups: list[dict],
    members: Mapping[str, Iterable[str]],
    check: bool = False,
    current: str | None = None,
) -> dict:
    """Bring the map file in line with the membership; say what changed (nothing is written in check mode).

    ``current`` is the file's text if the caller has read it already.
    """
    allowed, skipped = accounting(user_groups, members)
    wanted = map_text(allowed)
    current = (_read(map_path) if current is None else current) or ""
    before = read_map(current)
    result = {
        "changed": current != wanted,
        "added": sorted(set(allowed) - set(before)),
        "removed": sorted(set(before) - set(allowed)),
        "regrouped": sorted(user for user in set(allowed) & set(before) if allowed[user] != before[user]),
        "users": len(allowed),
        "skipped": [s._asdict() for s in skipped],
    }
    if result["changed"] and not check:
        write_atomically(map_path, wanted)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="condorlab-membership",
        description="Rebuild the access point's map of users to accounting groups from the Unix groups' "
        "members and reconfigure the schedd when it changed.",
    )
    parser.add_argument("--map", default=ACCOUNTING_MAP, help="the map file (default %(default)s)")
    parser.add_argument("--user-groups", default=contract.USER_GROUPS_FILE, help="default %(default)s")
    parser.add_argument("--check", action="store_true", help="say what would change; write nothing")
    parser.add_argument(
        "--reconfig",
        default="condor_reconfig -daemon schedd",
        help="command run after the map changed (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        user_groups = contract.load_user_groups(args.user_groups)
    except (OSError, ValueError, contract.ContractError) as error:
        log.error("cannot read the user groups: %s", error)
        return 2
    unix_groups = [name for group in user_groups for name in group["unix_groups"]]
    try:
        members = members_here(unix_groups)
    except UnknownGroups as error:
        log.error("Unix group(s) %s cannot be resolved here (is SSSD running?); the map is left as it is", error)
        return 1
    previous = _read(args.map)
    result = sync(args.map, user_groups, members, check=args.check, current=previous)
    for skipped in (Skipped(**fields) for fields in result["skipped"]):
        log.warning("%r (Unix group %s) gets no accounting group: %s", skipped.user, skipped.unix_group, skipped.why)
    if result["changed"] and not args.check:
        log.info(
            "map changed: added %s, removed %s, regrouped %s; reconfiguring the schedd",
            result["added"] or "-",
            result["removed"] or "-",
            result["regrouped"] or "-",
        )
        done = subprocess.run(args.reconfig.split(), capture_output=True, text=True, check=False)  # noqa: S603 - root's own command line
        if done.returncode != 0:
            # Put the old map back: the next run sees the change again and retries.
            log.error("%s failed (%s): %s; the map is put back", args.reconfig, done.returncode, done.stderr.strip())
            if previous is None:
                os.unlink(args.map)
            else:
                write_atomically(args.map, previous)
            return 1
    print(json.dumps(result, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
