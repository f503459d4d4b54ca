#!/usr/bin/python3 -I
# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The firewall's host sets: the addresses of the hosts its rules name, followed by their names.

The firewall role's ruleset (/etc/nftables.conf) matches the inventory hosts
a rule names as sources against named sets of its table, one per address
family (``htcondor_between_pool_hosts_v4``, ``..._v6``), and declares them
empty. This file fills them with the addresses the hosts' DNS names resolve
to now, for two callers that must agree:

- the ``firewall_host_sets`` module at a site.yml run (check mode says what
  would change);
- ``condorlab-firewall-resolve``, this very file installed by the firewall
  role, run by a systemd timer on every host.

A set is changed only when an answer changed, flushed and refilled in one
``nft -f`` transaction: the moment a host's new address is accepted its old
one is not any more, so whoever gets the old address next is not trusted.
A name that does not resolve (DNS down, a host away) keeps the addresses it
had last: a failure never takes an address out of a set. Each run keeps two
files in the state directory: every host's last addresses
(``addresses.json``) and the sets as ``nft`` statements (``sets.nft``),
which the ruleset includes when it is loaded (boot, reload), so a load
starts from the last answers rather than from empty sets.

Standard library only: it runs with the hosts' own python3.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import NamedTuple

log = logging.getLogger("condorlab.firewall")

CONFIG = "/etc/condorlab-firewall/hosts.json"
TABLE = "inet condorlab"
STATE_DIR = "/var/lib/condorlab-firewall"
NFT = "/usr/sbin/nft"
RESOLVE_TIMEOUT = 15.0  # seconds for all the names of a run; glibc tries a silent server for 5 s, twice
ADDRESSES_FILE = "addresses.json"
SETS_FILE = "sets.nft"

SET_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")
DNS_NAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9_][A-Za-z0-9_-]{0,62}(\.[A-Za-z0-9_][A-Za-z0-9_-]{0,62})*\.?$")
TABLE_NAME = re.compile(r"^(inet|ip|ip6) [A-Za-z_][A-Za-z0-9_]*$")

SETS_HEADER = """\
# The addresses of the hosts condorlab's firewall rules name, as their names
# last resolved: /etc/nftables.conf includes this file, so that a load of the
# ruleset (boot, reload) starts from them. Written by condorlab-firewall-resolve
# (a timer) and site.yml; edits are overwritten.
"""


class FirewallSetsError(Exception):
    """A bad configuration or a failing nft; the message says which and what to do."""


class HostSet(NamedTuple):
    """A pair of sets (IPv4, IPv6) holding the addresses of ``hosts``."""

    v4: str
    v6: str
    hosts: tuple[str, ...]


class Config(NamedTuple):
    hosts: dict[str, str]  # inventory host -> the DNS name it is resolved by
    sets: list[HostSet]
    table: str = TABLE
    state_dir: str = STATE_DIR


class Answer(NamedTuple):
    """What a name resolved to; ``error`` says why not when it did not."""

    v4: tuple[str, ...] = ()
    v6: tuple[str, ...] = ()
    error: str = ""


class Kept(NamedTuple):
    """A host whose name did not resolve: its last ``addresses`` stay in its sets."""

    host: str
    name: str
    error: str
    addresses: tuple[str, ...]


class Result(NamedTuple):
    sets: dict[str, list[str]]  # every set -> its addresses after the run
    moved: dict[str, tuple[list[str], list[str]]]  # host whose addresses changed -> (before, after)
    changes: dict[str, tuple[list[str], list[str]]]  # changed set -> (before, after)
    kept: list[Kept]
    unknown: list[Kept]  # hosts with no address ever known (their sets keep what they hold, plus the answers)
    state_changed: bool
    loaded: bool  # False: the table is not loaded (nftables not running); only the state was written

    @property
    def changed(self) -> bool:
        return bool(self.changes) or self.state_changed


def config_from(hosts: Mapping, sets: Iterable[Mapping], table: str = TABLE, state_dir: str = STATE_DIR) -> Config:
    """A configuration checked: DNS names, set names, the hosts the sets name."""
    if not isinstance(hosts, Mapping):
        raise FirewallSetsError(f"hosts must map inventory hosts to DNS names, not {hosts!r}")
    for host, name in hosts.items():
        if not isinstance(name, str) or not DNS_NAME.match(name):
            raise FirewallSetsError(f"host {host}: {name!r} is not a DNS name")
    if not isinstance(table, str) or not TABLE_NAME.match(table):
        raise FirewallSetsError(f"table {table!r} is not '<family> <name>', e.g. 'inet condorlab'")
    checked = []
    seen: set[str] = set()
    for item in sets:
        if not isinstance(item, Mapping) or set(item) != {"v4", "v6", "hosts"}:
            raise FirewallSetsError(f"a set needs exactly v4, v6 and hosts, not {item!r}")
        entry = HostSet(str(item["v4"]), str(item["v6"]), tuple(str(h) for h in item["hosts"]))
        for name in (entry.v4, entry.v6):
            if not SET_NAME.match(name) or name in seen:
                raise FirewallSetsError(f"set {name!r} is not an nftables set name, or named twice")
            seen.add(name)
        missing = [h for h in entry.hosts if h not in hosts]
        if missing:
            raise FirewallSetsError(f"set {entry.v4} names {', '.join(missing)}, which hosts does not list")
        checked.append(entry)
    return Config({str(h): n for h, n in hosts.items()}, checked, table, str(state_dir))


def load_config(path: str) -> Config:
    """The JSON file the firewall role writes: table, state_dir, hosts, sets."""
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise FirewallSetsError(f"{path}: expected an object with table, state_dir, hosts and sets")
    return config_from(
        data.get("hosts", {}), data.get("sets", []), data.get("table", TABLE), data.get("state_dir", STATE_DIR)
    )


def _sorted(addresses: Iterable[str]) -> list[str]:
    """Addresses in numeric order (anything else after them, as text)."""

    def key(text: str):
        try:
            address = ipaddress.ip_address(text)
        except ValueError:
            return (1, 0, 0, text)
        return (0, address.version, int(address), text)

    return sorted(set(addresses), key=key)


def _addresses(infos) -> tuple[tuple[str, ...], tuple[str, ...]]:
    v4: set = set()
    v6: set = set()
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if address.version == 4:
            v4.add(str(address))
        elif not address.is_link_local:  # link-local needs an interface: no source to accept
            v6.add(str(address))
    return tuple(_sorted(v4)), tuple(_sorted(v6))


def resolve(name: str) -> Answer:
    """The addresses ``name`` resolves to here (the system's resolver: /etc/hosts, then DNS)."""
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as error:
        return Answer(error=getattr(error, "strerror", None) or str(error))
    v4, v6 = _addresses(infos)
    if not (v4 or v6):
        return Answer(error="no usable address")
    return Answer(v4, v6)


def resolve_all(
    names: Iterable[str], resolver: Callable[[str], Answer] = resolve, timeout: float = RESOLVE_TIMEOUT
) -> dict[str, Answer]:
    """Each name's answer, asked in parallel; a name without one within ``timeout`` seconds counts as failed.

    A slow name (a DNS server that does not answer) neither holds up the others
    nor the update: its lookup goes on in a daemon thread nobody waits for.
    """
    answers: dict[str, Answer] = {}
    unique = sorted(set(names))
    threads = []
    for name in unique:
        thread = threading.Thread(target=lambda name=name: answers.__setitem__(name, resolver(name)), daemon=True)
        thread.start()
        threads.append(thread)
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = Answer(error=f"no answer within {timeout:g} s")
    return {name: answers.get(name, late) for name in unique}


def _elements(raw) -> list[str]:
    found = []
    for element in raw or []:
        value = element.get("elem", {}).get("val") if isinstance(element, dict) else element
        if isinstance(value, str):
            found.append(value)
    return found


def sets_from_json(text: str) -> dict[str, list[str]]:
    """Set name -> its addresses, from ``nft -j list table``."""
    try:
        objects = json.loads(text)["nftables"]
    except (ValueError, KeyError, TypeError) as error:
        raise FirewallSetsError(f"nft -j gave no ruleset: {error}") from error
    return {
        item["set"]["name"]: _sorted(_elements(item["set"].get("elem")))
        for item in objects
        if isinstance(item, dict) and "set" in item
    }


def _run_nft(nft: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([nft, *args], input=stdin, capture_output=True, text=True, check=False, timeout=30)  # noqa: S603 - root's own nft
    except (OSError, subprocess.TimeoutExpired) as error:
        raise FirewallSetsError(f"{nft}: {error}") from error


def current_sets(table: str, nft: str = NFT) -> dict[str, list[str]] | None:
    """The table's sets as loaded now, or None when the table is not loaded."""
    done = _run_nft(nft, ["-j", "list", "table", *table.split()])
    if done.returncode != 0:
        if "No such file or directory" in done.stderr:
            return None
        raise FirewallSetsError(f"nft list table {table} failed: {done.stderr.strip()}")
    return sets_from_json(done.stdout)


def read_known(path: str) -> dict[str, dict]:
    """Host -> {name, v4, v6}: the addresses each host had last ({} without the file or with a bad one)."""
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}
    except ValueError:
        log.warning("%s is not JSON; the hosts' last addresses are forgotten", path)
        return {}
    known = {}
    for host, entry in data.items() if isinstance(data, dict) else ():
        try:
            known[host] = {
                "name": str(entry["name"]),
                "v4": _sorted(str(ipaddress.IPv4Address(a)) for a in entry["v4"]),
                "v6": _sorted(str(ipaddress.IPv6Address(a)) for a in entry["v6"]),
            }
        except (KeyError, TypeError, ValueError):
            continue
    return known


def plan(
    config: Config,
    answers: Mapping[str, Answer],
    known: Mapping[str, dict],
    current: Mapping[str, list[str]],
) -> tuple[dict[str, dict], dict[str, list[str]], list[Kept], list[Kept]]:
    """(host -> addresses, set -> addresses wanted, hosts kept at their last addresses, hosts with none).

    A resolved name gives its host exactly its answer; an unresolved one keeps
    the addresses it had last. A set is the union of its hosts' addresses;
    one with a host of which no address was ever known also keeps what it
    holds now (it may be that host's).
    """
    addresses: dict[str, dict] = {}
    kept: list[Kept] = []
    unknown: list[Kept] = []
    for host, name in sorted(config.hosts.items()):
        answer = answers.get(name, Answer(error="not asked"))
        if not answer.error:
            addresses[host] = {"name": name, "v4": list(answer.v4), "v6": list(answer.v6)}
            continue
        last = known.get(host)
        if last and (last["v4"] or last["v6"]):
            addresses[host] = {"name": name, "v4": last["v4"], "v6": last["v6"]}
            kept.append(Kept(host, name, answer.error, tuple(last["v4"] + last["v6"])))
        else:
            unknown.append(Kept(host, name, answer.error, ()))
    wanted: dict[str, list[str]] = {}
    for entry in config.sets:
        partial = any(host not in addresses for host in entry.hosts)
        for family, name in (("v4", entry.v4), ("v6", entry.v6)):
            found = [a for host in entry.hosts if host in addresses for a in addresses[host][family]]
            wanted[name] = _sorted(found + (list(current.get(name, [])) if partial else []))
    return addresses, wanted, kept, unknown


def sets_text(config: Config, sets: Mapping[str, list[str]]) -> str:
    """The sets as the ruleset includes them: declared (as the ruleset does) with their addresses."""
    lines = [SETS_HEADER.rstrip("\n"), f"table {config.table} {{"]
    for entry in config.sets:
        for name, kind in ((entry.v4, "ipv4_addr"), (entry.v6, "ipv6_addr")):
            lines += [f"\tset {name} {{", f"\t\ttype {kind}"]
            if sets.get(name):
                lines.append(f"\t\telements = {{ {', '.join(sets[name])} }}")
            lines.append("\t}")
    lines.append("}")
    return "\n".join(lines) + "\n"


def update_text(table: str, changes: Mapping[str, tuple[list[str], list[str]]]) -> str:
    """One nft transaction that replaces the changed sets' contents."""
    lines = []
    for name, (_, after) in sorted(changes.items()):
        lines.append(f"flush set {table} {name}")
        if after:
            lines.append(f"add element {table} {name} {{ {', '.join(after)} }}")
    return "\n".join(lines) + "\n"


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as handle:
            return handle.read()
    except FileNotFoundError:
        return None


def _write(path: str, text: str) -> None:
    directory = os.path.dirname(path) or "."
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".condorlab-")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def sync(
    config: Config,
    check: bool = False,
    nft: str = NFT,
    resolver: Callable[[str], Answer] = resolve,
) -> Result:
    """Bring the loaded sets and the state files to what the names resolve to now; ``check``: change nothing."""
    answers = resolve_all(config.hosts.values(), resolver)
    loaded = current_sets(config.table, nft)
    addresses_path = os.path.join(config.state_dir, ADDRESSES_FILE)
    sets_path = os.path.join(config.state_dir, SETS_FILE)
    known = read_known(addresses_path)
    addresses, wanted, kept, unknown = plan(config, answers, known, loaded or {})
    moved = {}
    for host, entry in addresses.items():
        last = known.get(host, {"v4": [], "v6": []})
        if last["v4"] + last["v6"] != entry["v4"] + entry["v6"]:
            moved[host] = (last["v4"] + last["v6"], entry["v4"] + entry["v6"])
    if loaded is None:
        changes = {name: ([], after) for name, after in wanted.items() if after}
    else:
        # A set the loaded ruleset does not have yet gets its addresses from
        # the sets file when the new ruleset is loaded.
        changes = {
            name: (loaded[name], after) for name, after in wanted.items() if name in loaded and loaded[name] != after
        }
    files = {
        addresses_path: json.dumps(addresses, indent=2, sort_keys=True) + "\n",
        sets_path: sets_text(config, wanted),
    }
    stale = [path for path, text in files.items() if _read(path) != text]
    if not check:
        if loaded is not None and changes:
            done = _run_nft(nft, ["-f", "-"], update_text(config.table, changes))
            if done.returncode != 0:
                raise FirewallSetsError(f"nft could not update the sets: {done.stderr.strip()}")
        for path in stale:
            _write(path, files[path])
    return Result(wanted, moved, changes, kept, unknown, bool(stale), loaded is not None)


def _say(addresses: Iterable[str]) -> str:
    return ", ".join(addresses) or "nothing"


def report(result: Result, check: bool = False) -> int:
    """Log what a run did (the journal, under the timer) and return the exit status."""
    verb = "would hold" if check else "holds" if result.loaded else "holds once loaded"
    for host, (before, after) in sorted(result.moved.items()):
        log.info("%s resolves to %s (was %s)", host, _say(after), _say(before))
    for name, (before, after) in sorted(result.changes.items()):
        log.info("%s %s %s (was %s)", name, verb, _say(after), _say(before))
    for kept in result.kept:
        log.warning("%s: its name %s does not resolve (%s); it keeps %s", *kept[:3], _say(kept.addresses))
    for host in result.unknown:
        log.error(
            "%s: its name %s does not resolve (%s) and no address of it is known; its sets stay as they are",
            *host[:3],
        )
    if not result.loaded:
        log.error("the table is not loaded (is nftables.service running?); the addresses wait in the state files")
        return 1
    return 1 if result.unknown else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="condorlab-firewall-resolve",
        description="Fill the firewall's host sets with the addresses the hosts' names resolve to now.",
    )
    parser.add_argument("config", nargs="?", default=CONFIG, help="the hosts and their sets (default %(default)s)")
    parser.add_argument("--check", action="store_true", help="say what would change; change nothing")
    parser.add_argument("--nft", default=NFT, help="the nft program (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    try:
        result = sync(load_config(args.config), check=args.check, nft=args.nft)
    except (OSError, ValueError, FirewallSetsError) as error:
        log.error("%s", error)
        return 2
    return report(result, args.check)


if __name__ == "__main__":
    sys.exit(main())
