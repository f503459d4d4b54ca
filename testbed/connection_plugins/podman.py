"""The test bed's podman connection: containers.podman's, with pipelining.

containers.podman's plugin runs ``podman exec`` without ``--interactive``, so a
module cannot come on stdin and each task costs a temporary directory, a copy,
a chmod, the run and a removal (five podman calls). This one passes stdin when
Ansible pipelines, so a task is one command in the container. Run as root (as
the test bed is), that command enters the container's namespaces with
``nsenter``, with the container's environment, in a few milliseconds instead of
the 130 ms of a ``podman exec`` on this machine; otherwise it is ``podman exec
--interactive``. The container's filesystem is mounted only when a file is
transferred (the collection's mounts it on every connection, one more podman
call per task). Found by its short name ``podman`` before the collection's
(ansible.cfg and the molecule scenario put this directory on the connection
plugin path).
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess

from ansible.module_utils.common.text.converters import to_bytes, to_native
from ansible.plugins.connection import ensure_connect
from ansible_collections.containers.podman.plugins.connection.podman import Connection as PodmanConnection

DOCUMENTATION = """
    name: podman
    short_description: podman exec with pipelining (the condorlab test bed)
    description:
      - containers.podman's podman connection with pipelining; same options.
    author: condorlab
    extends_documentation_fragment:
      - connection_pipelining
    options:
      remote_addr:
        description: The container to run in.
        default: inventory_hostname
        vars:
          - name: inventory_hostname
          - name: ansible_host
          - name: ansible_podman_host
      remote_user:
        description: The user in the container.
        vars:
          - name: ansible_user
        env:
          - name: ANSIBLE_REMOTE_USER
        ini:
          - section: defaults
            key: remote_user
      podman_extra_args:
        description: Extra arguments for podman.
        default: ''
        vars:
          - name: ansible_podman_extra_args
        env:
          - name: ANSIBLE_PODMAN_EXTRA_ARGS
      podman_executable:
        description: The podman executable.
        default: podman
        vars:
          - name: ansible_podman_executable
        env:
          - name: ANSIBLE_PODMAN_EXECUTABLE
"""


def _start_time(pid: str) -> str:
    """The process's start time (field 22 of /proc/<pid>/stat): a reused pid has another."""
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().rsplit(")", 1)[1].split()[19]


_ENTRIES: dict[str, tuple[str, str, list[str]]] = {}


def container_entry(container: str, podman: str = "podman") -> list[str] | None:
    """The command prefix that runs a command in a running container as its root, with the container's
    environment, through nsenter (a few milliseconds; podman exec takes about 130 ms); None where that
    cannot be done (not root, no nsenter, the container not running): then podman exec is the way in.
    The container's process is remembered by pid and start time, so a restarted container is found again.
    """
    if os.geteuid() != 0 or not shutil.which("nsenter"):
        return None
    known = _ENTRIES.get(container)
    try:
        if known and _start_time(known[0]) == known[1]:
            return _nsenter(known[0], known[2])
    except OSError:
        pass
    found = subprocess.run(  # noqa: S603 - podman inspect of the test bed's container
        [podman, "inspect", "--format", "{{.State.Pid}} {{json .Config.Env}}", container],
        capture_output=True,
        text=True,
        check=False,
    )
    pid, _, env = found.stdout.strip().partition(" ")
    if found.returncode != 0 or not pid.isdigit() or pid == "0":
        return None
    try:
        _ENTRIES[container] = (pid, _start_time(pid), json.loads(env))
    except OSError:
        return None
    return _nsenter(pid, _ENTRIES[container][2])


def _nsenter(pid: str, env: list[str]) -> list[str]:
    return ["nsenter", "--target", pid, "--all", "--root", "--wd", "--", "env", "-i", *env]


class Connection(PodmanConnection):
    transport = "podman"
    has_pipelining = True

    def _connect(self):
        # The collection's _connect runs ``podman mount``; only put_file and fetch_file use the mount.
        self._mount_point = None
        self._mount_wanted = True
        self._connected = True

    def _mount(self):
        if self._mount_wanted:
            self._mount_wanted = False
            super()._connect()

    @ensure_connect
    def put_file(self, in_path, out_path):
        self._mount()
        super().put_file(in_path, out_path)

    @ensure_connect
    def fetch_file(self, in_path, out_path):
        self._mount()
        super().fetch_file(in_path, out_path)

    def _entry(self) -> list[str] | None:
        if self.user or self.get_option("podman_extra_args"):
            return None
        return container_entry(self._container_id, self._podman_path())

    def _podman_path(self) -> str:
        return shutil.which(self.get_option("podman_executable")) or "podman"

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        # ConnectionBase.exec_command only logs; the collection's would run without stdin.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        argv = shlex.split(to_native(cmd, errors="surrogate_or_strict"))
        entry = self._entry()
        if entry is None:
            args = ["exec", "--interactive"] if in_data is not None else ["exec"]
            if self.user:
                args.extend(("--user", self.user))
            return self._podman(args, argv, in_data)
        run = subprocess.run(  # noqa: S603 - the command Ansible sends, as podman exec would run it
            [to_bytes(a, errors="surrogate_or_strict") for a in entry + argv],
            input=in_data if in_data is not None else b"",
            capture_output=True,
            check=False,
        )
        return run.returncode, run.stdout, run.stderr
