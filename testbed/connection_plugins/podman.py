"""The test bed's podman connection: containers.podman's, with pipelining.

containers.podman's plugin runs ``podman exec`` without ``--interactive``, so a
module cannot come on stdin and each task costs a temporary directory, a copy,
a chmod, the run and a removal (five podman calls). This one passes stdin when
Ansible pipelines, so a task is one ``podman exec``. Found by its short name
``podman`` before the collection's (ansible.cfg and the molecule scenario put
this directory on the connection plugin path).
"""

from __future__ import annotations

import shlex

from ansible.module_utils.common.text.converters import to_native
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


class Connection(PodmanConnection):
    transport = "podman"
    has_pipelining = True

    @ensure_connect
    def exec_command(self, cmd, in_data=None, sudoable=False):
        # ConnectionBase.exec_command only logs; the collection's would run without stdin.
        super(PodmanConnection, self).exec_command(cmd, in_data=in_data, sudoable=sudoable)
        args = ["exec", "--interactive"] if in_data is not None else ["exec"]
        if self.user:
            args.extend(("--user", self.user))
        return self._podman(args, shlex.split(to_native(cmd, errors="surrogate_or_strict")), in_data)
