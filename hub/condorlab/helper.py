"""condorlab-job: submit and remove condorlab session jobs as the calling user.

The hub runs this through sudo as the user (sudoers allows nothing else):

  condorlab-job submit   < {"server": KEY, "env": {...}, "group": G, "profile": P,
                            "request_cpus": N, "request_memory_mb": M,
                            "files": {"session-tls.key": PEM, ...}}
  condorlab-job remove CLUSTER
  condorlab-job clean KEY
  condorlab-job token LIFETIME

It is a console script of the hub's root-owned virtualenv, run isolated
(python3 -I: no PYTHON* variables, no user site-packages, not the caller's
directory on the path), under the fixed environment sudo gives it.

submit checks the request again with the hub's own rules (contract.py) on this
side of sudo: the user must belong to one of the group's Unix groups, and may
ask for at most the profile's CPUs and memory; everything else (GPUs, walltime,
extra requirements, accounting group) comes from the profile and its group in
USER_GROUPS_FILE (the access point's map checks the accounting group again).
It renders the site's session template with checked values only, so the hub
can start sessions and nothing else as the user. The session's environment
(with its API token) and its TLS files are staged as 0600 files in
~/.condorlab/sessions/KEY (0700) and travel with the job, encrypted; the
description is submitted from the home directory with the htcondor bindings,
and {"cluster": N, "work_dir": DIR} is printed. The job is submitted on
hold: the hub seals and releases it (seal.py), as only the hub may.
remove removes only that user's session jobs. clean deletes a session's
staged secrets (session.json with its token, the key, the certificate and CA
bundle) once the session has ended; its logs stay. token fetches an IDTOKEN of
the user's own identity from the local schedd (FS authentication: the user is
who sudo made this process), for READ and WRITE only and valid LIFETIME seconds,
and prints {"token": ..., "lifetime": N}: the lab's own access to the pool,
which the hub hands to that user's running lab only.
"""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys

from . import contract
from .contract import ATTRS, ContractError

CONDOR_TOKEN_FETCH = "/usr/bin/condor_token_fetch"  # noqa: S105 - a program, not a secret


class RequestError(Exception):
    """The request is not one the helper accepts."""


def fail(message: str) -> None:
    print(f"condorlab-job: {message}", file=sys.stderr)
    sys.exit(2)


def load_config(path: str = contract.HELPER_CONFIG) -> dict:
    with open(path) as handle:
        return json.load(handle)


def check_request(request, user_groups: list[dict], unix_groups: set) -> dict:
    """Return the checked values of a submit request, or raise RequestError."""
    if not isinstance(request, dict):
        raise RequestError("the request must be a JSON object")
    unknown = set(request) - set(contract.REQUEST_FIELDS)
    if unknown:
        raise RequestError(f"unknown request fields: {', '.join(sorted(unknown))}")
    try:
        key = contract.check_server_key(request.get("server"))
        group, profile = contract.find_profile(user_groups, unix_groups, request.get("group"), request.get("profile"))
        where = contract.key_of(group, profile)
        # Integers only on this side: the hub sends what it checked.
        cpus, memory = request.get("request_cpus"), request.get("request_memory_mb")
        for field, value in (("request_cpus", cpus), ("request_memory_mb", memory)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ContractError(f"{field} must be an integer, not {str(value)[:20]!r}")
        cpus = contract.check_cpus(cpus, profile, where, "request_cpus")
        memory = contract.check_memory(memory, profile, where, "request_memory_mb")
        avoid = contract.check_avoid_nodes(request.get("avoid_nodes", []))
    except ContractError as exc:
        raise RequestError(str(exc)) from None
    env = request.get("env")
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and contract.ENV_NAME.fullmatch(k) and isinstance(v, str) for k, v in env.items()
    ):
        raise RequestError("env must map variable names to strings")
    files = request.get("files", {})
    allowed = contract.TLS_FILES.values()
    if not isinstance(files, dict) or not set(files) <= set(allowed):
        raise RequestError(f"files may only name {', '.join(allowed)}")
    for name, content in files.items():
        if not isinstance(content, str) or len(content) > contract.MAX_FILE_SIZE or "-----BEGIN " not in content:
            raise RequestError(f"file {name} must be PEM text of at most {contract.MAX_FILE_SIZE} bytes")
    return {
        "server": key,
        "session": contract.session_values(group, profile, cpus, memory),
        "env": env,
        "files": files,
        "avoid_nodes": avoid,
    }


def shared_dir_of(user: pwd.struct_passwd, config: dict) -> str:
    """The user's directory in the shared area, if it exists and the user can write it."""
    if not config.get("shared_area"):
        return ""
    path = config["shared_area"].format(username=user.pw_name)
    return path if os.path.isdir(path) and os.access(path, os.W_OK | os.X_OK) else ""


def render(config: dict, user: pwd.struct_passwd, checked: dict, shared_dir: str) -> str:
    """The submit description: the site's template with the checked session and the contract's names."""
    import jinja2

    directory, name = os.path.split(config["template"])
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(directory),
        extensions=["jinja2.ext.do"],
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,  # noqa: S701 - an HTCondor submit description, not HTML
    )
    staging = contract.staging_dir(checked["server"])
    return environment.get_template(name).render(
        username=user.pw_name,
        server_key=checked["server"],
        staging=staging,
        secret_files=[f"{staging}/{name}" for name in (contract.SESSION_FILE, *sorted(checked["files"]))],
        session_file=contract.SESSION_FILE,
        summary_file=contract.SUMMARY_FILE,
        session_command=config["session_command"],
        shared_dir=shared_dir,
        transfer_dir=config["transfer_dir"],
        walltime_grace=int(config.get("walltime_grace", 300)),
        job_lease=int(config.get("job_lease", 180)),
        session=checked["session"],
        avoid_nodes=checked.get("avoid_nodes", []),
        attrs=ATTRS,
        interactive_share=bool(config.get("interactive_share")),
        share_attr=contract.SHARE_SLOT_ATTR,
    )


def private_dir(path: str) -> None:
    os.makedirs(path, mode=0o700, exist_ok=True)
    os.chmod(path, 0o700)


def write_private(path: str, content: str) -> None:
    if os.path.lexists(path):
        os.unlink(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)


def submit(user: pwd.struct_passwd, config: dict) -> None:
    import htcondor

    try:
        user_groups = contract.load_user_groups(config.get("user_groups_file", contract.USER_GROUPS_FILE))
        checked = check_request(json.load(sys.stdin), user_groups, contract.unix_groups_of(user.pw_name))
    except (ValueError, RequestError, OSError) as exc:
        fail(str(exc))
    home = user.pw_dir
    os.chdir(home)
    shared_dir = shared_dir_of(user, config)
    description_text = render(config, user, checked, shared_dir)
    private_dir(os.path.join(home, ".condorlab"))
    private_dir(os.path.join(home, contract.STAGING))
    staging = os.path.join(home, contract.staging_dir(checked["server"]))
    private_dir(staging)
    for name in (*contract.LOG_FILES, contract.SUMMARY_FILE, *contract.TLS_FILES.values()):
        if os.path.lexists(os.path.join(staging, name)):
            os.unlink(os.path.join(staging, name))
    work_dir = shared_dir or config["transfer_dir"]
    session = {"env": checked["env"], "work_dir": work_dir}
    write_private(os.path.join(staging, contract.SESSION_FILE), json.dumps(session))
    for name, content in checked["files"].items():
        write_private(os.path.join(staging, name), content)
    if not shared_dir:
        os.makedirs(os.path.join(home, config["transfer_dir"]), mode=0o700, exist_ok=True)
    description = htcondor.Submit(description_text)
    description["initialdir"] = home
    # On hold until the hub seals it (condorlab-seal, as root): a job the user
    # submits is never a session by itself. The seal releases it and asks for
    # a negotiation cycle.
    description["hold"] = "true"
    result = htcondor.Schedd().submit(description)
    print(json.dumps({"cluster": result.cluster(), "work_dir": work_dir}))


def remove(user: pwd.struct_passwd, cluster: str) -> None:
    import htcondor

    if not cluster.isdigit():
        fail(f"bad job id {cluster!r}")
    constraint = f'ClusterId == {int(cluster)} && {ATTRS.session} =?= true && Owner == "{user.pw_name}"'
    htcondor.Schedd().act(htcondor.JobAction.Remove, constraint)
    print(json.dumps({"removed": int(cluster)}))


def clean(user: pwd.struct_passwd, key: str) -> None:
    try:
        staging = os.path.join(user.pw_dir, contract.staging_dir(key))
    except ContractError as exc:
        fail(str(exc))
    removed = []
    for name in contract.SECRET_FILES:
        path = os.path.join(staging, name)
        if os.path.lexists(path):
            os.unlink(path)
            removed.append(name)
    print(json.dumps({"cleaned": key, "removed": removed}))


def token_env(user: pwd.struct_passwd) -> dict:
    """condor_token_fetch's environment: FS authentication only, so that a token the user keeps in
    ~/.condor/tokens.d is never what the new one derives from."""
    return {"PATH": "/usr/bin:/bin", "HOME": user.pw_dir, "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "FS"}


def token(user: pwd.struct_passwd, lifetime: str) -> None:
    """Print a fresh IDTOKEN of this user's, limited to the contract's authorizations and lifetime."""
    try:
        seconds = contract.check_token_lifetime(lifetime)
    except ContractError as exc:
        fail(str(exc))
    command = [CONDOR_TOKEN_FETCH, "-lifetime", str(seconds)]
    for level in contract.TOKEN_AUTHZ:
        command += ["-authz", level]
    try:
        fetched = subprocess.run(command, env=token_env(user), capture_output=True, text=True, timeout=30, check=False)  # noqa: S603
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(f"condor_token_fetch did not run: {exc}")
    value = fetched.stdout.strip()
    if fetched.returncode != 0 or not contract.TOKEN_FORM.fullmatch(value) or len(value) > contract.TOKEN_SIZE_MAX:
        # Never the output itself: it may hold a token.
        fail(f"condor_token_fetch failed ({fetched.returncode}): {fetched.stderr.strip()[:300]}")
    print(json.dumps({"token": value, "lifetime": seconds}))


def main() -> None:
    user = pwd.getpwuid(os.getuid())
    if user.pw_uid == 0:
        fail("refusing to run as root")
    if not contract.is_user_name(user.pw_name):
        fail(f"user name {user.pw_name!r} is not one condorlab accepts ({contract.USER_NAME_RULE})")
    os.umask(0o077)
    args = sys.argv[1:]
    if args == ["submit"]:
        submit(user, load_config())
    elif len(args) == 2 and args[0] == "remove":
        remove(user, args[1])
    elif len(args) == 2 and args[0] == "clean":
        clean(user, args[1])
    elif len(args) == 2 and args[0] == "token":
        token(user, args[1])
    else:
        fail(
            "usage: condorlab-job submit < request.json | condorlab-job remove CLUSTER | condorlab-job clean KEY"
            " | condorlab-job token LIFETIME"
        )


if __name__ == "__main__":
    main()
