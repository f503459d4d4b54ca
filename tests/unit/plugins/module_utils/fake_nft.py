"""A stand-in for nft: keeps one table's sets in a JSON file, answers ``-j list table`` and applies ``-f -``."""

from __future__ import annotations

import json
import sys
from pathlib import Path

SCRIPT = r"""
import json, re, sys
args = sys.argv[1:]
data = sys.stdin.read() if args == ["-f", "-"] else ""
with open(calls, "a") as log:
    log.write(json.dumps({"args": args, "stdin": data}) + "\n")
try:
    sets = json.load(open(state))
except FileNotFoundError:
    sys.stderr.write("Error: No such file or directory; did you mean table 'condorlab' in family inet?\n")
    sys.exit(1)
if args[:3] == ["-j", "list", "table"]:
    objects = [{"metainfo": {"version": "1.1.3"}}, {"table": {"family": "inet", "name": "condorlab"}}]
    for name, elements in sets.items():
        entry = {"family": "inet", "name": name, "table": "condorlab", "type": "ipv4_addr"}
        if elements:
            entry["elem"] = elements
        objects.append({"set": entry})
    print(json.dumps({"nftables": objects}))
elif args == ["-f", "-"]:
    for line in data.splitlines():
        flush = re.match(r"^flush set inet condorlab (\S+)$", line)
        add = re.match(r"^add element inet condorlab (\S+) \{ (.*) \}$", line)
        name = (flush or add).group(1)
        if name not in sets:
            sys.stderr.write(f"Error: No such file or directory: set {name}\n")
            sys.exit(1)
        if flush:
            sets[name] = []
        else:
            sets[name] += add.group(2).split(", ")
    json.dump(sets, open(state, "w"))
else:
    sys.exit(f"unexpected {args}")
"""


class FakeNft:
    """``path`` is the program; ``load(sets)`` loads the table, ``sets()`` reads it, ``calls()`` what was run."""

    def __init__(self, directory: Path) -> None:
        self.state = directory / "kernel.json"
        self.log = directory / "nft-calls"
        self.path = directory / "nft"
        self.path.write_text(f"#!{sys.executable}\nstate, calls = {str(self.state)!r}, {str(self.log)!r}\n{SCRIPT}")
        self.path.chmod(0o755)

    def load(self, sets: dict[str, list[str]]) -> None:
        self.state.write_text(json.dumps(sets))

    def sets(self) -> dict[str, list[str]]:
        return json.loads(self.state.read_text())

    def calls(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines()] if self.log.exists() else []

    def updates(self) -> list[str]:
        return [call["stdin"] for call in self.calls() if call["args"] == ["-f", "-"]]
