#!/usr/bin/python
# Copyright: condorlab contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
from __future__ import annotations

DOCUMENTATION = r"""
---
module: condor_idtoken
short_description: Mint an HTCondor IDTOKEN into a file, idempotently
description:
  - Ensures that O(path) holds an HTCondor IDTOKEN for O(identity), signed with
    the local signing key O(key), with the requested authorizations and
    lifetime, readable by root only.
  - An existing token is kept when its claims match (subject, issuer, key id,
    scopes), it is not about to expire and it was issued after the signing key
    file was last written. Otherwise a new token is minted with
    C(condor_token_create) on the host. Rotating the signing key therefore
    re-mints every token on the next run.
  - The token is never returned.
version_added: "0.1.0"
options:
  path:
    description: File to hold the token, usually in C(/etc/condor/tokens.d).
    type: path
    required: true
  identity:
    description: Identity the token grants, C(user@domain).
    type: str
    required: true
  key:
    description: Name of the signing key in O(key_directory).
    type: str
    default: POOL
  key_directory:
    description: HTCondor's C(SEC_PASSWORD_DIRECTORY).
    type: path
    default: /etc/condor/passwords.d
  issuer:
    description:
      - Expected issuer (the pool's C(TRUST_DOMAIN)). When set, a token from
        another issuer is replaced.
    type: str
  authz:
    description: Authorization levels the token is limited to; empty means no limit.
    type: list
    elements: str
    default: []
  lifetime:
    description: Token lifetime in seconds; 0 means the token does not expire.
    type: int
    default: 0
  renew_before:
    description: Re-mint a token that expires within this many seconds.
    type: int
    default: 86400
  state:
    description: Whether the token file should exist.
    type: str
    choices: [present, absent]
    default: present
  token_create:
    description: Path of the C(condor_token_create) program.
    type: path
    default: /usr/bin/condor_token_create
attributes:
  check_mode:
    support: full
    description: Reports whether a token would be minted or removed without doing it.
  diff_mode:
    support: none
    description: Token content is never shown.
author:
  - condorlab contributors
"""

EXAMPLES = r"""
- name: Give this host a daemon token of the pool
  condor_idtoken:
    path: /etc/condor/tokens.d/condorlab-daemon
    identity: "condor@{{ htcondor_trust_domain }}"
    issuer: "{{ htcondor_trust_domain }}"

- name: A short-lived, read-only token for a monitoring probe
  condor_idtoken:
    path: /etc/condor/tokens.d/monitor
    identity: monitor@pool.example.org
    authz: [READ]
    lifetime: 2592000
"""

RETURN = r"""
path:
  description: Token file.
  returned: always
  type: str
reason:
  description: Why the token was (or in check mode would be) minted or removed; empty when unchanged.
  returned: always
  type: str
  sample: scopes differ
claims:
  description:
    - Non-secret claims of the token now in place (C(sub), C(iss), C(kid),
      C(scope), C(iat), C(exp)).
    - Empty when absent, or in check mode before minting.
  returned: always
  type: dict
"""

import base64
import binascii
import json
import os
import time

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.condor_files import fix_mode, read_bytes, write_secret

AUTHZ_LEVELS = (
    "READ",
    "WRITE",
    "ADMINISTRATOR",
    "CONFIG",
    "DAEMON",
    "NEGOTIATOR",
    "ADVERTISE_MASTER",
    "ADVERTISE_STARTD",
    "ADVERTISE_SCHEDD",
)


def _b64url(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def decode_claims(token: str) -> dict | None:
    """Return the header and payload claims of a JWT, or None if it is not one."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        return None
    try:
        header = json.loads(_b64url(parts[0]))
        payload = json.loads(_b64url(parts[1]))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return None
    if not isinstance(header, dict) or not isinstance(payload, dict):
        return None
    claims = {k: payload[k] for k in ("sub", "iss", "scope", "iat", "exp") if k in payload}
    claims["kid"] = header.get("kid")
    return claims


def wanted_scope(authz: list[str]) -> set[str]:
    return {f"condor:/{level}" for level in authz}


def stale_reason(claims: dict | None, params: dict, key_mtime: float, now: float) -> str:
    """Return why an existing token must be replaced, or '' if it can stay."""
    if claims is None:
        return "the file does not hold a token"
    if claims.get("sub") != params["identity"]:
        return "identity differs"
    if claims.get("kid") != params["key"]:
        return "signing key differs"
    if params["issuer"] and claims.get("iss") != params["issuer"]:
        return "issuer differs"
    have_scope = set(str(claims.get("scope", "")).split())
    if have_scope != wanted_scope(params["authz"]):
        return "scopes differ"
    exp = claims.get("exp")
    if params["lifetime"] == 0 and exp is not None:
        return "token expires but no lifetime was asked"
    if params["lifetime"] > 0:
        if exp is None:
            return "token does not expire but a lifetime was asked"
        if exp - now < params["renew_before"]:
            return "token expires soon"
    iat = claims.get("iat")
    if not isinstance(iat, (int, float)) or iat < int(key_mtime):
        return "signing key is newer than the token"
    return ""


def run(module: AnsibleModule) -> dict:
    params = module.params
    path = params["path"]
    result = {"changed": False, "path": path, "reason": "", "claims": {}}
    for level in params["authz"]:
        if level not in AUTHZ_LEVELS:
            module.fail_json(
                msg=f"authz: {level!r} is not an HTCondor authorization level; use one of {', '.join(AUTHZ_LEVELS)}"
            )
    if "@" not in params["identity"]:
        module.fail_json(msg=f"identity: {params['identity']!r} must have the form user@domain")
    if params["lifetime"] < 0:
        module.fail_json(msg=f"lifetime: {params['lifetime']} must be 0 (no expiry) or a number of seconds")
    if 0 < params["lifetime"] <= params["renew_before"]:
        module.fail_json(
            msg=f"lifetime: {params['lifetime']} s is not longer than renew_before ({params['renew_before']} s), "
            "so the token would be re-minted on every run; use a longer lifetime or a smaller renew_before"
        )

    current = read_bytes(path)
    if params["state"] == "absent":
        if current is not None:
            result.update(changed=True, reason="state is absent")
            if not module.check_mode:
                os.unlink(path)
        return result

    key_path = os.path.join(params["key_directory"], params["key"])
    try:
        key_mtime = os.stat(key_path).st_mtime
    except FileNotFoundError:
        if module.check_mode:
            # The key is installed by an earlier task that check mode did not run.
            result.update(changed=True, reason="signing key not installed yet")
            return result
        module.fail_json(msg=f"key: signing key {key_path} does not exist; create it first (condor_signing_key)")

    claims = decode_claims(current.decode("ascii", "replace")) if current is not None else None
    reason = "no token yet" if current is None else stale_reason(claims, params, key_mtime, time.time())
    if not reason:
        result["claims"] = claims
        if fix_mode(path, check_mode=module.check_mode):
            result.update(changed=True, reason="permissions")
        return result

    result.update(changed=True, reason=reason)
    if module.check_mode:
        return result
    cmd = [params["token_create"], "-identity", params["identity"], "-key", params["key"]]
    for level in params["authz"]:
        cmd += ["-authz", level]
    if params["lifetime"]:
        cmd += ["-lifetime", str(params["lifetime"])]
    rc, out, err = module.run_command(cmd)
    token = out.strip()
    new_claims = decode_claims(token) if rc == 0 else None
    if new_claims is None:
        module.fail_json(msg=f"condor_token_create failed (rc={rc}): {err.strip()}", path=path)
    write_secret(path, (token + "\n").encode("ascii"))
    result["claims"] = new_claims
    return result


def main() -> None:
    module = AnsibleModule(
        argument_spec=dict(
            path=dict(type="path", required=True),
            identity=dict(type="str", required=True),
            key=dict(type="str", default="POOL", no_log=False),
            key_directory=dict(type="path", default="/etc/condor/passwords.d"),
            issuer=dict(type="str"),
            authz=dict(type="list", elements="str", default=[]),
            lifetime=dict(type="int", default=0),
            renew_before=dict(type="int", default=86400),
            state=dict(type="str", choices=["present", "absent"], default="present"),
            token_create=dict(type="path", default="/usr/bin/condor_token_create"),
        ),
        supports_check_mode=True,
    )
    module.exit_json(**run(module))


if __name__ == "__main__":
    main()
