"""condorlab-tunnel: open and close a session's tunnel, the hub's only way to its lab (the tunnel transport).

A lab listens on a Unix socket in its job's private directory; no port of its
execute node is open for it. The hub reaches it through condor_ssh_to_job,
which HTCondor authenticates, brokers (through CCB where the node has no
inbound path) and starts as the job's owner: the starter's sshd, run as the
user, connects to the lab's socket. Each tunnel is a systemd unit of its own,
condorlab-tunnel@USER:SERVER_KEY.service, so it outlives a restart of the hub;
systemd starts it again when it drops (the ssh keepalive sees a dead node or
channel within TUNNEL_SSH_OPTIONS' 15 s).

Hub-side, the user's ssh makes the tunnel's end a socket in a directory of its
own, TUNNEL_DIR/PORT (the user's, group of the tunnel front, 2710); the front
(tunnelfront.py) holds every port of the tunnel range on loopback for as long
as the access point runs and passes a connection to PORT on to that socket. So
the proxy's https target is 127.0.0.1:PORT, other users of the access point can
neither take such a port (the front holds it) nor open the socket (its
directory is closed to them), and whoever connects to the port meets the lab's
client-certificate check.

The hub runs this as root through one sudo rule:

  condorlab-tunnel open USER SERVER_KEY CLUSTER SOCKET [PORT]   prints {"port": PORT}
  condorlab-tunnel close USER SERVER_KEY                        prints {"closed": PORT or null}

open does so only for the running, sealed session job CLUSTER of that user's
server, and only to a socket path of the shape the session wrapper reports.
Given the PORT the server is routed to, it keeps the tunnel that runs there,
or opens it there again (the hub does so once after it starts: a restart of
the access point empties /run).
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

from . import contract
from .contract import ATTRS, ContractError

SETTINGS_FILE = "/etc/condorlab/tunnel.json"
# The hub-side ends: TUNNEL_DIR/<port>/end.sock; the units' settings: UNIT_DIR/<user>:<key>.env.
TUNNEL_DIR = "/run/condorlab/tunnels"
UNIT_DIR = "/run/condorlab/tunnel-units"
UNIT = "condorlab-tunnel@{instance}.service"
END_NAME = "end.sock"
# What the session wrapper reports: an absolute path of letters, digits and /._- ending in .sock.
SOCKET_PATH = re.compile(r"^/[A-Za-z0-9/._-]{1,100}\.sock$")
RUNNING = 2


class TunnelError(Exception):
    """The request is not one the hub may make."""


@dataclass(frozen=True)
class TunnelSettings:
    """The access point's tunnel settings (the jupyterhub role writes SETTINGS_FILE)."""

    port_range: tuple[int, int]
    front_user: str  # the account of condorlab-tunnel-front: it holds the ports, it may open the ends

    @classmethod
    def load(cls, path: str = SETTINGS_FILE) -> TunnelSettings:
        with open(path) as handle:
            values = json.load(handle)
        low, high = (int(v) for v in values["port_range"])
        return cls((low, high), str(values["front_user"]))


def instance(user: str, key: str) -> str:
    return f"{user}:{key}"


def check_socket_path(path: str) -> str:
    if not SOCKET_PATH.fullmatch(path) or "/../" in path or "/./" in path or "//" in path:
        raise TunnelError(f"socket path {contract.quoted(path)} is not one a session wrapper reports")
    return path


def parse_args(args: list[str]) -> tuple[str, str, str, int | None, str | None, int | None]:
    """(verb, user, key, cluster, socket, port) from the command line; TunnelError when it is not a valid one."""
    prefer = None
    if len(args) == 6 and args[0] == "open":
        if not args[5].isdigit() or not 1 <= int(args[5]) <= 65535:
            raise TunnelError(f"bad port {args[5][:20]!r}")
        prefer = int(args.pop())
    if len(args) == 5 and args[0] == "open":
        verb, user, key, cluster, path = args
    elif len(args) == 3 and args[0] == "close":
        (verb, user, key), cluster, path = args, None, None
    else:
        raise TunnelError("usage: condorlab-tunnel open USER SERVER_KEY CLUSTER SOCKET [PORT] | close USER SERVER_KEY")
    try:
        contract.check_user_name(user)
        contract.check_server_key(key)
    except ContractError as exc:
        raise TunnelError(str(exc)) from None
    if cluster is not None and (not cluster.isdigit() or len(cluster) > 12):
        raise TunnelError(f"bad job id {cluster[:20]!r}")
    checked = None if path is None else check_socket_path(path)
    return verb, user, key, None if cluster is None else int(cluster), checked, prefer


def check_job(ad: dict, user: str, key: str) -> None:
    """Refuse a job that is not the running, sealed session job of this user's server."""
    problems = contract.job_of_server_problems(ad, user, key)
    if ad.get(ATTRS.sealed) is not True:
        problems.append("it is not a sealed session job")
    if ad.get("JobStatus") != RUNNING:
        problems.append("it is not running")
    if problems:
        raise TunnelError("; ".join(problems))


def held_ports(uid: int, low: int, high: int, table: str = "/proc/net/tcp") -> set[int]:
    """The ports of low-high on which an account with this uid listens on 127.0.0.1 (the front's)."""
    held = set()
    with open(table) as handle:
        next(handle)
        for line in handle:
            fields = line.split()
            address, port = fields[1].split(":")
            if fields[3] == "0A" and address == "0100007F" and int(fields[7]) == uid:  # LISTEN, 127.0.0.1
                if low <= (number := int(port, 16)) <= high:
                    held.add(number)
    return held


def unit_settings(owner: pwd.struct_passwd, cluster: int, end: str, path: str) -> str:
    """The unit's environment file: whom the tunnel runs as, to which job, and its two ends."""
    values = {
        "TUNNEL_USER": owner.pw_name,
        "TUNNEL_UID": owner.pw_uid,
        "TUNNEL_GID": owner.pw_gid,
        "TUNNEL_JOB": f"{cluster}.0",
        "TUNNEL_END": end,
        "TUNNEL_SOCKET": path,
    }
    return "".join(f"{name}={value}\n" for name, value in values.items())


def read_unit_settings(text: str) -> dict:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line)


def end_port(settings: dict) -> int | None:
    """The hub-side port of a tunnel from its unit settings (its end is TUNNEL_DIR/<port>/end.sock)."""
    end = settings.get("TUNNEL_END")
    return int(os.path.basename(os.path.dirname(end))) if end else None


class Tunnels:
    """The tunnels on this access point: their directories, unit settings and units."""

    def __init__(self, settings: TunnelSettings, tunnel_dir: str = TUNNEL_DIR, unit_dir: str = UNIT_DIR, run=None):
        self.settings = settings
        self.tunnel_dir, self.unit_dir = tunnel_dir, unit_dir
        self.run = run or (lambda *cmd: subprocess.run(cmd, check=True, capture_output=True, timeout=30))  # noqa: S603

    def _settings_file(self, user: str, key: str) -> str:
        return os.path.join(self.unit_dir, instance(user, key) + ".env")

    def port_of(self, user: str, key: str) -> int | None:
        return end_port(self.current(user, key))

    def current(self, user: str, key: str) -> dict:
        """The unit settings of user's server's tunnel ({} without one)."""
        try:
            with open(self._settings_file(user, key)) as handle:
                return read_unit_settings(handle.read())
        except OSError:
            return {}

    def open(self, user: str, key: str, cluster: int, path: str, prefer: int | None = None) -> int:
        """Start the tunnel of user's server to its job's socket; return the hub-side port.

        With prefer (the port the server is routed to): keep a tunnel that already runs there to that job
        and socket, or open it on that port again if it is free (after a restart of the access point).
        """
        settings = self.current(user, key)
        same = settings.get("TUNNEL_JOB") == f"{cluster}.0" and settings.get("TUNNEL_SOCKET") == path
        if prefer is not None and same and end_port(settings) == prefer:
            self.run("systemctl", "start", "--no-block", UNIT.format(instance=instance(user, key)))
            return prefer
        self.close(user, key)  # one tunnel per server: an older one goes first
        front = pwd.getpwnam(self.settings.front_user)
        owner = pwd.getpwnam(user)
        free = sorted(held_ports(front.pw_uid, *self.settings.port_range), key=lambda port: port != prefer)
        os.makedirs(self.tunnel_dir, mode=0o755, exist_ok=True)
        os.makedirs(self.unit_dir, mode=0o700, exist_ok=True)
        for port in free:
            directory = os.path.join(self.tunnel_dir, str(port))
            try:
                os.mkdir(directory, 0o700)  # taken atomically: another open may run at the same time
            except FileExistsError:
                continue
            os.chown(directory, owner.pw_uid, grp.getgrgid(front.pw_gid).gr_gid)
            os.chmod(directory, 0o2710)  # noqa: S103 - the front (its group) may only pass through
            break
        else:
            raise TunnelError(f"no free tunnel port: the front holds {len(free)} of {self.settings.port_range}")
        end = os.path.join(directory, END_NAME)
        with open(os.open(self._settings_file(user, key), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as out:
            out.write(unit_settings(owner, cluster, end, path))
        self.run("systemctl", "start", "--no-block", UNIT.format(instance=instance(user, key)))
        return port

    def close(self, user: str, key: str) -> int | None:
        """Stop the tunnel of user's server and delete its end; the port it had, or None."""
        port = self.port_of(user, key)
        self.run("systemctl", "stop", UNIT.format(instance=instance(user, key)))
        if port is not None:
            shutil.rmtree(os.path.join(self.tunnel_dir, str(port)), ignore_errors=True)
        try:
            os.unlink(self._settings_file(user, key))
        except FileNotFoundError:
            pass
        return port


def job_ad(schedd, cluster: int) -> dict:
    projection = ["ClusterId", "ProcId", "Owner", "JobStatus", *ATTRS.names(), ATTRS.sealed]
    ads = [dict(ad) for ad in schedd.query(constraint=f"ClusterId == {cluster}", projection=projection)]
    if len(ads) != 1:
        raise TunnelError(f"job {cluster} is not one queued job ({len(ads)} found)")
    return ads[0]


def main() -> None:
    if os.getuid() != 0:
        print("condorlab-tunnel: must run as root (the hub runs it through sudo)", file=sys.stderr)
        sys.exit(2)
    try:
        verb, user, key, cluster, path, prefer = parse_args(sys.argv[1:])
        tunnels = Tunnels(TunnelSettings.load())
        if verb == "close":
            print(json.dumps({"closed": tunnels.close(user, key)}))
            return
        import htcondor

        check_job(job_ad(htcondor.Schedd(), cluster), user, key)
        print(json.dumps({"port": tunnels.open(user, key, cluster, path, prefer)}))
    except (TunnelError, OSError, KeyError, subprocess.SubprocessError) as exc:
        print(f"condorlab-tunnel: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
