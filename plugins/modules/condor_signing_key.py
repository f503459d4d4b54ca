#!/usr/bin/python
# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: condor_signing_key
short_description: Manage an HTCondor IDTOKENS signing key
description:
  - Ensures that an HTCondor token signing key (for example the pool key
    C(POOL)) exists in the password directory with mode 0600.
  - With O(content_b64) the key file gets exactly those bytes, which is how a
    key kept in Ansible Vault, or read from the central manager, is installed
    on the other pool hosts.
  - Without O(content_b64) a missing key is generated with
    C(condor_store_cred add -c) from a random secret made on the host itself;
    an existing key is kept as it is. Only the pool key C(POOL) can be
    generated this way.
  - The key itself is never returned; only its SHA-256 fingerprint is.
version_added: "0.1.0"
options:
  name:
    description: Name of the key (file name in O(directory)).
    type: str
    default: POOL
  directory:
    description: HTCondor's C(SEC_PASSWORD_DIRECTORY).
    type: path
    default: /etc/condor/passwords.d
  content_b64:
    description:
      - Base64 of the key file's bytes. Leave it unset to generate a key when
        none exists.
    type: str
  store_cred:
    description: Path of the C(condor_store_cred) program used to generate a key.
    type: path
    default: /usr/sbin/condor_store_cred
attributes:
  check_mode:
    support: full
    description: Reports whether the key would be created or replaced without writing it.
  diff_mode:
    support: none
    description: Key material is never shown.
author:
  - condorlab contributors
"""

EXAMPLES = r"""
- name: Generate the pool signing key on the central manager if it is missing
  condor_signing_key:
    name: POOL

- name: Install the pool key read from the central manager on another host
  condor_signing_key:
    name: POOL
    content_b64: "{{ htcondor__pool_key.content }}"
  no_log: true
"""

RETURN = r"""
path:
  description: Path of the key file.
  returned: always
  type: str
  sample: /etc/condor/passwords.d/POOL
fingerprint:
  description: SHA-256 of the key file's bytes (empty in check mode when the key would be generated).
  returned: always
  type: str
  sample: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08
action:
  description: What was (or in check mode would be) done.
  returned: always
  type: str
  sample: generated
"""

import base64
import binascii
import hashlib
import os
import secrets

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.condor_files import fix_mode, read_bytes, write_secret

KEY_NAME_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.")


def _fingerprint(content: bytes | None) -> str:
    return hashlib.sha256(content).hexdigest() if content is not None else ""


def run(module: AnsibleModule) -> dict:
    name = module.params["name"]
    if not name or not set(name) <= KEY_NAME_CHARS or name.startswith("."):
        module.fail_json(msg=f"name: {name!r} is not a valid key name; use letters, digits, '_', '-' and '.'")
    directory = module.params["directory"]
    path = os.path.join(directory, name)
    if not os.path.isdir(directory):
        if module.check_mode:
            # HTCondor is not installed yet: a real run would install it first.
            action = "installed" if module.params["content_b64"] is not None else "generated"
            return {"changed": True, "path": path, "action": action, "fingerprint": ""}
        module.fail_json(msg=f"directory: {directory} does not exist; install HTCondor first")

    current = read_bytes(path)
    wanted_b64 = module.params["content_b64"]
    result = {"changed": False, "path": path, "action": "none"}

    if wanted_b64 is not None:
        try:
            wanted = base64.b64decode(wanted_b64, validate=True)
        except (binascii.Error, ValueError):
            module.fail_json(msg="content_b64: not valid base64; pass the key file's bytes base64-encoded")
        if not wanted:
            module.fail_json(msg="content_b64: the key is empty; pass the key file's bytes base64-encoded")
        if current != wanted:
            result.update(changed=True, action="replaced" if current is not None else "installed")
            if not module.check_mode:
                write_secret(path, wanted)
            current = wanted
    elif current is None:
        if name != "POOL":
            module.fail_json(
                msg=f"name: condor_store_cred can only generate the pool key POOL, not {name!r}; "
                "supply the key in content_b64"
            )
        result.update(changed=True, action="generated")
        if not module.check_mode:
            secret = secrets.token_urlsafe(48)
            rc, _out, err = module.run_command(
                [module.params["store_cred"], "add", "-c", "-i", "-"], data=secret, binary_data=False
            )
            if rc != 0:
                module.fail_json(msg=f"condor_store_cred failed (rc={rc}): {err.strip()}", path=path)
            current = read_bytes(path)
            if current is None:
                module.fail_json(
                    msg=f"directory: condor_store_cred did not write {path}; "
                    "set directory to HTCondor's SEC_PASSWORD_DIRECTORY",
                    path=path,
                )

    if current is not None and os.path.exists(path):
        if fix_mode(path, check_mode=module.check_mode):
            result["changed"] = True
            if result["action"] == "none":
                result["action"] = "permissions"
    result["fingerprint"] = _fingerprint(current)
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            name=dict(type="str", default="POOL"),
            directory=dict(type="path", default="/etc/condor/passwords.d"),
            content_b64=dict(type="str", no_log=True),
            store_cred=dict(type="path", default="/usr/sbin/condor_store_cred"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
