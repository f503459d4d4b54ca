"""The session job's executable: its lab on a socket in the sandbox, report once it listens, signals, settings."""

from __future__ import annotations

import datetime
import http.server
import json
import os
import re
import signal
import socket
import ssl
import stat
import subprocess
import sys
import threading
import time

import pytest
from condorlab_session import wrapper
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

# A stand-in for jupyterhub-singleuser: listens on --ServerApp.sock (which it
# takes only with the default port in JUPYTERHUB_SERVICE_URL, as Jupyter Server
# does) after LAB_DELAY seconds (with TLS when LAB_CERT/LAB_KEY are set), and on
# SIGTERM writes LAB_MARKER and ends by that signal, as a lab does.
LAB = r"""
import os, signal, socket, ssl, sys, time
def on_term(number, frame):
    if os.environ.get("LAB_MARKER"):
        open(os.environ["LAB_MARKER"], "w").write("SIGTERM")
    signal.signal(number, signal.SIG_DFL)
    os.kill(os.getpid(), number)
signal.signal(signal.SIGTERM, on_term)
time.sleep(float(os.environ.get("LAB_DELAY", "0")))
port = int(os.environ["JUPYTERHUB_SERVICE_URL"].rsplit(":", 1)[1].split("/")[0])
(sock,) = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--ServerApp.sock=")]
if port != 8888:
    sys.exit(4)  # as Jupyter Server: --port and --sock are mutually exclusive
server = socket.socket(socket.AF_UNIX)
server.bind(sock)
server.listen(16)
context = None
if os.environ.get("LAB_CERT"):
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(os.environ["LAB_CERT"], os.environ["LAB_KEY"])
while True:
    conn, _ = server.accept()
    if context is not None:
        try:
            conn = context.wrap_socket(conn, server_side=True)
        except (OSError, ssl.SSLError):
            pass
    conn.close()
"""


def lab_command() -> list[str]:
    return [sys.executable, "-c", LAB]


def make_cert(directory, name: str) -> tuple[str, str]:
    """A self-signed certificate and its key (paths)."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


def der_of(cert_path: str) -> bytes:
    return ssl.PEM_cert_to_DER_cert(open(cert_path).read())


def settings(**values) -> wrapper.Settings:
    return wrapper.Settings(lab_command=tuple(lab_command()), **values)


class Hub:
    """The hub's socket report endpoint: answers 204 and notes whether the lab listened when the report came.

    Its token endpoint answers token_status (404: this site gives labs no token) with the next of tokens.
    """

    def __init__(self, status: int = 204, tokens=(), token_status: int = 404):
        reports = self.reports = []
        self.token_status, self.tokens, self.token_asks = token_status, list(tokens), []
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path.endswith("/condorlab/token"):
                    hub.token_asks.append(self.headers["Authorization"])
                    given = hub.token_status if hub.tokens else 403
                    schedd = "<10.0.0.8:9618?sock=schedd_1_2>\n$CondorVersion: 23.9.6 $\n"
                    token = {"token": hub.tokens.pop(0), "lifetime": 1, "schedd": schedd} if given == 200 else None
                    answer = json.dumps(token).encode() if token else b""
                    self.send_response(given)
                    self.send_header("Content-Length", str(len(answer)))
                    self.end_headers()
                    self.wfile.write(answer)
                    return
                try:
                    probe = socket.socket(socket.AF_UNIX)
                    probe.connect(body["socket"])
                    probe.close()
                    listening = True
                except OSError:
                    listening = False
                reports.append((self.path, self.headers["Authorization"], body, listening))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hub/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()


@pytest.fixture
def hub():
    server = Hub()
    yield server
    server.close()


def sandbox_with_session(tmp_path, hub_url: str, extra_env=None) -> dict:
    """A job sandbox holding the session file and the node's settings file; the wrapper's environment."""
    (tmp_path / "session.json").write_text(
        json.dumps(
            {
                "env": {
                    "JUPYTERHUB_API_URL": hub_url,
                    "JUPYTERHUB_API_TOKEN": "secret-token",
                    "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:0/user/alice/",
                    **(extra_env or {}),
                },
                "work_dir": "work",
            }
        )
    )
    (tmp_path / "settings.json").write_text(json.dumps({"lab_command": lab_command(), "report_patience": 5}))
    env = {k: v for k, v in os.environ.items() if not k.startswith("JUPYTERHUB_")}
    package = os.path.dirname(os.path.dirname(wrapper.__file__))
    return {**env, "_CONDOR_SCRATCH_DIR": str(tmp_path), "HOME": str(tmp_path), "PYTHONPATH": package}


def run_wrapper(tmp_path, env) -> subprocess.Popen:
    code = (
        "import sys; from condorlab_session import wrapper; "
        f"wrapper.main(['session.json', 'session.summary'], {str(tmp_path / 'settings.json')!r})"
    )
    return subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=env)


# ---- settings ---------------------------------------------------------------


def test_the_node_s_settings_are_read_and_checked(tmp_path):
    path = tmp_path / "session.json"
    path.write_text(json.dumps({"report_patience": 60}))
    loaded = wrapper.Settings.load(str(path))
    assert loaded.report_patience == 60 and loaded.lab_command[0].endswith("/bin/jupyterhub-singleuser")
    # a node's settings from before labs listened on sockets only: site.yml writes them again
    path.write_text(json.dumps({"transport": "direct", "port_range": [51000, 51009]}))
    with pytest.raises(SystemExit, match=re.escape("unknown setting(s) port_range, transport")):
        wrapper.Settings.load(str(path))
    with pytest.raises(SystemExit, match=r"run site\.yml"):
        wrapper.Settings.load(str(tmp_path / "missing.json"))


# ---- the lab's socket in the sandbox -------------------------------------------


def test_the_job_reports_its_lab_s_socket_in_a_directory_only_the_user_may_enter(tmp_path, hub):
    """The lab listens on a socket in the sandbox, never on a port; its path is reported once it listens."""
    env = sandbox_with_session(tmp_path, hub.url)
    job = run_wrapper(tmp_path, env)
    try:
        deadline = time.monotonic() + 20
        while not hub.reports and time.monotonic() < deadline:
            time.sleep(0.1)
        socket_path = str(tmp_path / ".condorlab" / "lab.sock")
        assert hub.reports == [("/hub/api/condorlab/port", "token secret-token", {"socket": socket_path}, True)]
        assert stat.S_IMODE(os.stat(tmp_path / ".condorlab").st_mode) == 0o700
        summary = json.loads((tmp_path / "session.summary").read_text())
        assert summary["socket"] == socket_path and "port" not in summary
    finally:
        job.terminate()
        job.wait(20)


def test_a_sandbox_path_too_long_for_a_socket_is_refused_with_its_reason(tmp_path):
    deep = tmp_path / ("d" * 100)
    deep.mkdir()
    with pytest.raises(SystemExit, match="too long for a Unix socket"):
        wrapper.lab_socket(str(deep))


def test_the_summary_is_written_even_when_the_node_s_settings_are_missing(tmp_path):
    (tmp_path / "session.json").write_text("{}")
    env = {**os.environ, "_CONDOR_SCRATCH_DIR": str(tmp_path)}
    code = (
        "from condorlab_session import wrapper; "
        f"wrapper.main(['session.json', 'session.summary'], {str(tmp_path / 'missing.json')!r})"
    )
    env["PYTHONPATH"] = os.path.dirname(os.path.dirname(wrapper.__file__))
    job = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=30)
    assert job.returncode == 1 and "run site.yml" in job.stderr
    assert "started" in json.loads((tmp_path / "session.summary").read_text()), "HTCondor finds its output file"


def test_the_lab_is_taken_as_started_only_once_it_listens_as_this_session(tmp_path):
    own_cert, own_key = make_cert(tmp_path, "session")
    env = {"JUPYTERHUB_SERVICE_URL": "https://0.0.0.0:0/user/alice/", "LAB_DELAY": "0.8", "LAB_CERT": own_cert}
    env = {**os.environ, **env, "LAB_KEY": own_key}
    began = time.monotonic()
    process, path = wrapper.start_lab_on_socket(
        lab_command(), env, str(tmp_path), der_of(own_cert), settings(), str(tmp_path)
    )
    try:
        assert path == str(tmp_path / ".condorlab" / "lab.sock") and time.monotonic() - began >= 0.8
        assert wrapper.answers_as_us(path, der_of(own_cert))
        assert env["JUPYTERHUB_SERVICE_URL"] == "https://127.0.0.1:8888/user/alice/", "Jupyter's default port"
    finally:
        process.kill()
        process.wait()


def test_a_socket_another_certificate_answers_on_is_not_this_session_s_lab(tmp_path):
    own_cert, _ = make_cert(tmp_path, "session")
    other_cert, other_key = make_cert(tmp_path, "squatter")
    path = str(tmp_path / "other.sock")
    env = {
        **os.environ,
        "JUPYTERHUB_SERVICE_URL": "https://0.0.0.0:8888/",
        "LAB_CERT": other_cert,
        "LAB_KEY": other_key,
    }
    squatter = subprocess.Popen([*lab_command(), f"--ServerApp.sock={path}"], env=env)
    try:
        deadline = time.monotonic() + 10
        while not wrapper.answers_as_us(path, der_of(other_cert)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert wrapper.answers_as_us(path, der_of(other_cert))
        assert not wrapper.answers_as_us(path, der_of(own_cert)), "another certificate does not pass as the session"
    finally:
        squatter.kill()
        squatter.wait()


def test_a_lab_that_does_not_come_up_on_its_socket_is_given_up_with_its_exit(tmp_path):
    failing = wrapper.Settings(lab_command=(sys.executable, "-c", "raise SystemExit(1)"))
    env = {**os.environ, "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:0/"}
    with pytest.raises(SystemExit, match=r"did not come up on its socket \(exit 1\)"):
        wrapper.start_lab_on_socket(list(failing.lab_command), env, str(tmp_path), None, failing, str(tmp_path))


# ---- the whole job ------------------------------------------------------------


def test_the_job_reports_its_lab_once_and_passes_signals_to_the_lab(tmp_path, hub):
    env = sandbox_with_session(tmp_path, hub.url, {"LAB_MARKER": str(tmp_path / "marker")})
    socket_path = str(tmp_path / ".condorlab" / "lab.sock")
    job = run_wrapper(tmp_path, env)
    try:
        deadline = time.monotonic() + 20
        while not hub.reports and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.reports == [("/hub/api/condorlab/port", "token secret-token", {"socket": socket_path}, True)], (
            "one report, once the lab listened"
        )
        summary = json.loads((tmp_path / "session.summary").read_text())
        assert summary["socket"] == socket_path and summary["work_dir"] == str(tmp_path / "work")
        job.send_signal(signal.SIGTERM)  # HTCondor's vacate or remove
        assert job.wait(20) == 128 + signal.SIGTERM, "the job ends as its lab did"
    finally:
        job.kill()
    assert (tmp_path / "marker").read_text() == "SIGTERM", "the lab got the signal"


def test_a_refused_report_ends_the_lab_and_the_job(tmp_path):
    hub = Hub(status=400)
    try:
        env = sandbox_with_session(tmp_path, hub.url)
        job = run_wrapper(tmp_path, env)
        assert job.wait(20) == 1
        socket_path = str(tmp_path / ".condorlab" / "lab.sock")
        assert [report[2:] for report in hub.reports] == [({"socket": socket_path}, True)], "refused at once, no retry"
        assert not wrapper.answers_as_us(socket_path, None), "the lab was stopped"
    finally:
        hub.close()


def test_exit_codes_are_those_of_a_shell():
    assert wrapper.exit_code(0) == 0 and wrapper.exit_code(3) == 3
    assert wrapper.exit_code(-signal.SIGKILL) == 137


# ---- the lab's HTCondor token -----------------------------------------------------


def test_the_lab_s_token_is_kept_private_renewed_and_dropped_when_the_hub_says_the_session_is_over(tmp_path):
    hub = Hub(tokens=["eyJa.one.sig", "eyJb.two.sig"], token_status=200)
    try:
        keeper = wrapper.TokenKeeper(hub.url, "secret-token", None, str(tmp_path))
        assert keeper.fetch() is True
        stored = tmp_path / ".condorlab" / "tokens.d" / "session"
        assert stored.read_text() == "eyJa.one.sig\n"
        assert stat.S_IMODE(stored.stat().st_mode) == 0o600
        assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700
        assert keeper.environment() == {
            "_CONDOR_SEC_TOKEN_DIRECTORY": str(stored.parent),
            "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
            "_CONDOR_SCHEDD_ADDRESS_FILE": str(tmp_path / ".condorlab" / "schedd.address"),
        }
        assert (tmp_path / ".condorlab" / "schedd.address").read_text().startswith("<10.0.0.8:9618")
        keeper.RETRY = 0.05
        keeper.keep()  # fetches and renews, then the hub has no more (403: the session is over): it stops
        assert stored.read_text() == "eyJb.two.sig\n"
        assert hub.token_asks == ["token secret-token"] * 3, "with the session's own API token only"
    finally:
        hub.close()


def test_a_lab_the_hub_gives_no_token_starts_without_one(tmp_path, hub):
    env = sandbox_with_session(tmp_path, hub.url, {"LAB_MARKER": str(tmp_path / "marker")})
    job = run_wrapper(tmp_path, env)
    try:
        deadline = time.monotonic() + 20
        while not hub.reports and time.monotonic() < deadline:
            time.sleep(0.05)
        deadline = time.monotonic() + 5
        while not hub.token_asks and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.token_asks == ["token secret-token"] and len(hub.reports) == 1
        assert not (tmp_path / ".condorlab" / "tokens.d").exists()
    finally:
        job.kill()
        job.wait(20)


def test_example_notebooks_come_into_a_new_lab_once_and_a_user_s_own_are_left_alone(tmp_path):
    examples, work = tmp_path / "examples", tmp_path / "work"
    examples.mkdir()
    work.mkdir()
    (examples / "your-batch-jobs.ipynb").write_text("site's notebook")
    (examples / "other.ipynb").write_text("another")
    (work / "other.ipynb").write_text("the user's own file of that name")
    assert wrapper.ship_examples(str(examples), str(work)) == ["your-batch-jobs.ipynb"]
    assert (work / "your-batch-jobs.ipynb").read_text() == "site's notebook"
    assert (work / "other.ipynb").read_text() == "the user's own file of that name"
    (work / "your-batch-jobs.ipynb").unlink()  # deleted by its user: it does not come back
    assert wrapper.ship_examples(str(examples), str(work)) == []
    assert not (work / "your-batch-jobs.ipynb").exists()
    assert wrapper.ship_examples("", str(work)) == [], "a site may ship none"
    assert wrapper.ship_examples(str(tmp_path / "missing"), str(work)) == [], "a missing directory is no failure"
