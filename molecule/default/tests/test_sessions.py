"""JupyterLab sessions as HTCondor jobs, driven through the hub's web API as a user would."""

from __future__ import annotations

import hashlib
import json
import secrets
import shlex
from pathlib import Path

import pytest
from conftest import PROJECT, wait_for

EXECUTE_NODES = {"wn1", "wn2"}
USERS = ("alice", "bob", "carol")


def session_jobs(hub, user: str) -> list[dict]:
    out = hub.check_output(
        f"condor_q -all -json -constraint 'Owner == \"{user}\" && CondorlabSession =?= true' "
        "-attributes ClusterId,JobStatus,RemoteHost,Owner"
    )
    return json.loads(out) if out.strip() else []


@pytest.fixture(scope="module")
def alice_session(browser, hub):
    result = browser("start", "alice", "180")
    assert result["login"] == 200
    assert "ready_after" in result, result
    yield result
    browser("stop", "alice")


def test_login_with_a_wrong_password_is_refused(outsider, browser):
    out = outsider.run("python3 /tmp/hubclient.py login alice 'not-the-password'")
    assert json.loads(out.stdout)["login"] == 403


def test_alice_lab_runs_as_her_condor_job_on_an_execute_node(alice_session, hub, execute_nodes):
    jobs = session_jobs(hub, "alice")
    assert len(jobs) == 1
    job = jobs[0]
    assert job["Owner"] == "alice" and job["JobStatus"] == 2
    node_name = job["RemoteHost"].split("@")[-1].split(".")[0]
    assert node_name in EXECUTE_NODES
    node = {"wn1": execute_nodes[0], "wn2": execute_nodes[1]}[node_name]
    procs = node.check_output("ps -eo user:20,args --no-headers | grep '[j]upyterhub-singleuser' || true")
    assert procs.split()[0] == "alice", procs


def test_alice_reaches_her_lab_through_the_proxy(alice_session, browser):
    result = browser("get", "alice", "/user/alice/api/status")
    assert result["status"] == 200, result
    assert "last_activity" in json.loads(result["text"])


def test_bob_cannot_reach_alice_lab(alice_session, browser):
    result = browser("get", "bob", "/user/alice/api/status")
    assert result["status"] in (403, 404) or "/hub/login" in result["url"], result
    assert "last_activity" not in result["text"]


def test_the_api_token_is_not_in_the_job_ad(alice_session, hub):
    job = session_jobs(hub, "alice")[0]
    token = json.loads(hub.file("/home/alice/.condorlab/sessions/default/session.json").content_string)["env"][
        "JUPYTERHUB_API_TOKEN"
    ]
    ad = hub.check_output(f"condor_q -long {job['ClusterId']}")
    assert token not in ad
    staged = hub.file("/home/alice/.condorlab/sessions/default/session.json")
    assert staged.user == "alice" and staged.mode == 0o600


def test_the_lab_survives_a_hub_restart(alice_session, hub, browser):
    hub.check_output("systemctl restart jupyterhub")
    assert wait_for(
        lambda: hub.run("curl -sf --cacert /etc/condorlab/public-tls/ca.crt https://localhost:8443/hub/api/").rc == 0,
        timeout=60,
    )
    assert len(session_jobs(hub, "alice")) == 1
    result = browser("get", "alice", "/user/alice/api/status")
    assert result["status"] == 200, result


@pytest.mark.parametrize(
    ("user", "saved_at"),
    [
        ("bob", "/shared/bob/hello-{token}.txt"),  # shared area
        ("carol", "/home/carol/condorlab/hello-{token}.txt"),  # transferred back to the hub
    ],
)
def test_a_file_written_in_the_lab_outlives_the_session(browser, hub, user, saved_at):
    token = secrets.token_hex(4)
    started = browser("start", user, "180")
    assert started["start_status"] in (201, 202) and "ready_after" in started, started
    body = json.dumps({"type": "file", "format": "text", "content": f"written by {user} {token}"})
    put = browser("put", user, f"/user/{user}/api/contents/hello-{token}.txt", body)
    assert put["status"] == 201, put
    stopped = browser("stop", user)
    assert stopped["stop_status"] == 204 and "stopped_after" in stopped, stopped
    assert session_jobs(hub, user) == []
    saved = hub.file(saved_at.format(token=token))
    assert saved.exists and saved.user == user
    assert saved.content_string == f"written by {user} {token}"
    history = json.loads(
        hub.check_output(
            f"condor_history -json -limit 1 -constraint 'Owner == \"{user}\" && CondorlabSession =?= true' "
            "-attributes ExitCode,JobStatus"
        )
    )
    assert history[0]["JobStatus"] == 4 and history[0]["ExitCode"] == 0, "the session ended normally"


def test_session_output_is_readable_by_the_user(hub):
    err = hub.run("su -s /bin/sh -c 'cat ~/.condorlab/sessions/default/session.err' carol")
    assert err.rc == 0 and "starting JupyterLab" in err.stdout


def test_the_hub_runs_unprivileged(hub):
    users = hub.check_output("ps -eo user:20,args --no-headers | grep '[b]in/jupyterhub ' | awk '{print $1}'")
    assert set(users.split()) == {"jupyterhub"}
    proxy = hub.check_output("ps -eo user:20,args --no-headers | grep '[c]onfigurable-http-proxy' | awk '{print $1}'")
    assert set(proxy.split()) == {"jupyterhub-proxy"}


@pytest.mark.parametrize(
    "command",
    [
        "sudo -n -u root /opt/condorlab/hub/bin/condorlab-job remove 1",
        "sudo -n -u alice /bin/sh -c id",
        "sudo -n -u alice /usr/bin/condor_submit /dev/null",
        "sudo -n -u jupyterhub-proxy /opt/condorlab/hub/bin/condorlab-job remove 1",
    ],
)
def test_sudo_refuses_anything_but_the_job_helper_as_allowed_users(hub, command):
    result = hub.run(f"runuser -u jupyterhub -- {command}")
    assert result.rc != 0
    assert "password is required" in result.stderr or "not allowed" in result.stderr, result.stderr


def test_sudo_allows_the_job_helper_as_an_allowed_user(hub):
    result = hub.run("runuser -u jupyterhub -- sudo -n -u alice /opt/condorlab/hub/bin/condorlab-job remove 999999")
    assert result.rc == 0, result.stderr


def test_the_venv_and_the_job_helper_are_the_root_s_alone(hub):
    """Neither the hub account nor a user can change the code the helper runs as users."""
    for account in ("jupyterhub", "alice"):
        # (find cannot enter the TLS directories, which are not theirs to read either)
        writable = hub.run(f"runuser -u {account} -- find /opt/condorlab/hub /etc/condorlab -writable -print")
        assert writable.stdout.strip() == "", (account, writable.stdout)
        assert "/opt/condorlab" not in writable.stderr, writable.stderr
        site = hub.check_output(
            "/opt/condorlab/hub/bin/python3 -c 'import condorlab, os; print(os.path.dirname(condorlab.__file__))'"
        )
        touched = hub.run(f"runuser -u {account} -- touch {site}/evil.py /opt/condorlab/hub/bin/condorlab-job")
        assert touched.rc != 0 and "Permission denied" in touched.stderr
    assert hub.file("/opt/condorlab/hub/bin/condorlab-job").user == "root"
    assert hub.file("/opt/condorlab/hub/bin/condorlab-job").content_string.startswith(
        "#!/opt/condorlab/hub/bin/python3 -I"
    )


def installed_modules(host, python: str, package: str) -> dict[str, str]:
    """sha256 of each module of the package as the host's interpreter imports it."""
    code = (
        f"import hashlib, json, pathlib, {package} as p; d = pathlib.Path(p.__file__).parent; "
        "print(json.dumps({f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in d.glob('*.py')}))"
    )
    return json.loads(host.check_output(f"{python} -I -c {shlex.quote(code)}"))


def project_modules(directory: Path) -> dict[str, str]:
    return {f.name: hashlib.sha256(f.read_bytes()).hexdigest() for f in directory.glob("*.py")}


def test_the_hosts_run_the_project_s_modules_as_they_are(hub, execute_nodes):
    """What site.yml installed is the project's code, every module (an upgrade included)."""
    assert installed_modules(hub, "/opt/condorlab/hub/bin/python3", "condorlab") == project_modules(
        PROJECT / "hub" / "condorlab"
    )
    for node in execute_nodes:
        installed = installed_modules(node, "/opt/condorlab/singleuser/bin/python3", "condorlab_session")
        assert installed == project_modules(PROJECT / "session" / "condorlab_session"), node.backend.name


def test_another_user_s_job_cannot_change_what_the_session_wrapper_reads(execute_nodes):
    """bob's batch job on a node (runs as bob) tries to edit or replace the wrapper's settings and code."""
    venv = "/opt/condorlab/singleuser"
    probe = (
        "import os, sys\n"
        "done = []\n"
        "for path in sys.argv[1:]:\n"
        "    for how in ('write', 'replace'):\n"
        "        try:\n"
        "            if how == 'write':\n"
        "                open(path, 'a').close()\n"
        "            else:\n"
        "                open(path + '.new', 'w').close(); os.replace(path + '.new', path)\n"
        "            done.append(how + ' ' + path)\n"
        "        except OSError:\n"
        "            pass\n"
        "print(done)\n"
    )
    targets = [f"{venv}/etc/condorlab/session.json", f"{venv}/bin/condorlab-session"]
    for node in execute_nodes:
        package = node.check_output(
            f"{venv}/bin/python3 -c 'import condorlab_session, os; print(os.path.dirname(condorlab_session.__file__))'"
        )
        paths = " ".join([*targets, f"{package}/wrapper.py"])
        out = node.check_output(f"cd /tmp && runuser -u bob -- python3 -c {shlex.quote(probe)} {paths}")
        assert out.strip() == "[]", f"{node.backend.name}: bob could {out}"
        assert node.file(targets[0]).user == "root" and node.file(targets[0]).mode == 0o644


EVIL = "import os; open('/tmp/condorlab-evil-ran', 'w').write(str(os.getuid()))"


@pytest.mark.parametrize(
    "command",
    [
        # The hub account passing Python variables through sudo: sudo refuses to set them ...
        "runuser -u jupyterhub -- sudo -n -u alice PYTHONPATH=/tmp/evil /opt/condorlab/hub/bin/condorlab-job clean default",
        # ... and drops them from the environment it was started with.
        "runuser -u jupyterhub -- env PYTHONPATH=/tmp/evil PYTHONSTARTUP=/tmp/evil/sitecustomize.py "
        "sudo -n -u alice /opt/condorlab/hub/bin/condorlab-job clean default",
        # A user running the helper with them: it runs isolated (-I) and ignores them.
        "runuser -u alice -- env PYTHONPATH=/tmp/evil PYTHONSTARTUP=/tmp/evil/sitecustomize.py PYTHONINSPECT=1 "
        "/opt/condorlab/hub/bin/condorlab-job clean default",
    ],
    ids=["sudo-setenv", "inherited", "user-runs-it"],
)
def test_the_job_helper_ignores_python_variables(hub, command):
    hub.check_output(f'rm -f /tmp/condorlab-evil-ran; mkdir -p /tmp/evil; echo "{EVIL}" > /tmp/evil/sitecustomize.py')
    hub.check_output("cp /tmp/evil/sitecustomize.py /tmp/evil/json.py; chmod -R a+rX /tmp/evil")
    result = hub.run(command + " < /dev/null")
    assert not hub.file("/tmp/condorlab-evil-ran").exists, (command, result.stdout, result.stderr)
    control = hub.run("runuser -u alice -- env PYTHONPATH=/tmp/evil /opt/condorlab/hub/bin/python3 -c pass")
    assert control.rc == 0 and hub.file("/tmp/condorlab-evil-ran").exists, "the trap catches a Python not isolated"
    if "PYTHONPATH=/tmp/evil /opt" in command:
        assert result.rc != 0 and "not allowed to set" in result.stderr, result.stderr
    else:
        assert result.rc == 0 and '"cleaned": "default"' in result.stdout, result.stderr
