"""The session job's executable: bind before report, port retries, signal forwarding, settings."""

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

# A stand-in for jupyterhub-singleuser: listens on the port of JUPYTERHUB_SERVICE_URL
# (or on --ServerApp.sock, which it takes only with the default port) after LAB_DELAY seconds (with TLS when LAB_CERT/LAB_KEY are set), and on SIGTERM
# writes LAB_MARKER and ends by that signal, as a lab does.
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
sock = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--ServerApp.sock=")]
if sock:
    if port != 8888:
        sys.exit(4)  # as Jupyter Server: --port and --sock are mutually exclusive
    server = socket.socket(socket.AF_UNIX)
    server.bind(sock[0])
else:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        server.bind(("0.0.0.0", port))
    except OSError:
        sys.exit(3)
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


def free_ports(count: int) -> list[int]:
    """count distinct ports free now (the kernel's choice)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def settings(port_range, **values) -> wrapper.Settings:
    return wrapper.Settings(transport="direct", port_range=port_range, lab_command=tuple(lab_command()), **values)


class Hub:
    """The hub's port report endpoint: answers 204 and notes whether the lab listened when the report came."""

    def __init__(self, status: int = 204):
        reports = self.reports = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                try:
                    if "socket" in body:
                        probe = socket.socket(socket.AF_UNIX)
                        probe.connect(body["socket"])
                        probe.close()
                    else:
                        socket.create_connection(("127.0.0.1", body["port"]), timeout=2).close()
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


def sandbox_with_session(tmp_path, hub_url: str, port_range, extra_env=None, transport="direct") -> dict:
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
    (tmp_path / "settings.json").write_text(
        json.dumps(
            {"transport": transport, "port_range": list(port_range), "lab_command": lab_command(), "report_patience": 5}
        )
    )
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
    path.write_text(json.dumps({"transport": "direct", "port_range": [51000, 51009], "report_patience": 60}))
    loaded = wrapper.Settings.load(str(path))
    assert loaded.port_range == (51000, 51009) and loaded.report_patience == 60
    assert loaded.lab_command[0].endswith("/bin/jupyterhub-singleuser")
    path.write_text(json.dumps({"report_patience": 60}))
    assert wrapper.Settings.load(str(path)).transport == "tunnel", "the tunnel is the default, without ports"
    for values, message in [
        ({"port_range": [51000, 51009], "port": 1}, "unknown setting(s) port"),
        ({"transport": "direct", "report_patience": 1}, "port_range must be [first, last]"),
        ({"port_range": [80, 90]}, "within 1024-65535, not [80, 90]"),
        ({"transport": "ssh"}, "transport must be one of tunnel, direct"),
    ]:
        path.write_text(json.dumps(values))
        with pytest.raises(SystemExit, match=re.escape(message)):
            wrapper.Settings.load(str(path))
    with pytest.raises(SystemExit, match=r"run site\.yml"):
        wrapper.Settings.load(str(tmp_path / "missing.json"))


# ---- the tunnel transport: a socket in the sandbox --------------------------


def test_the_job_reports_its_lab_s_socket_in_a_directory_only_the_user_may_enter(tmp_path, hub):
    """The lab listens on a socket in the sandbox, never on a port; its path is reported once it listens."""
    env = sandbox_with_session(tmp_path, hub.url, (50000, 50009), transport="tunnel")
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


# ---- ports ------------------------------------------------------------------


def three_free_ports() -> int:
    """The first of three consecutive ports nobody listens on."""
    for _ in range(50):
        (first,) = free_ports(1)
        if first + 2 <= 65535 and all(_free(port) for port in (first + 1, first + 2)):
            return first
    raise AssertionError("no three consecutive free ports")


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def test_a_free_port_is_one_nobody_listens_on():
    low = three_free_ports()
    held = []
    try:
        for port in (low, low + 2):
            held.append(socket.socket())
            held[-1].bind(("0.0.0.0", port))
        assert wrapper.free_port(low, low + 2) == low + 1
        held.append(socket.socket())
        held[-1].bind(("0.0.0.0", low + 1))
        with pytest.raises(SystemExit, match=f"no free port in {low}-{low + 2}"):
            wrapper.free_port(low, low + 2)
    finally:
        for s in held:
            s.close()


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


def test_the_lab_is_reported_only_once_it_listens(tmp_path):
    (port,) = free_ports(1)
    env = {"JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:0/user/alice/", "LAB_DELAY": "0.8", **os.environ}
    began = time.monotonic()
    process, reported = wrapper.start_lab(lab_command(), env, str(tmp_path), None, settings((port, port)))
    try:
        assert reported == port and time.monotonic() - began >= 0.8
        assert wrapper.answers_as_us(port, None)
        assert env["JUPYTERHUB_SERVICE_URL"] == f"http://0.0.0.0:{port}/user/alice/"
    finally:
        process.kill()
        process.wait()


def test_a_port_another_certificate_holds_is_never_reported(tmp_path, monkeypatch):
    """Somebody takes the chosen port before the lab binds it: the lab starts again on another port."""
    own_cert, own_key = make_cert(tmp_path, "session")
    other_cert, other_key = make_cert(tmp_path, "squatter")
    taken, free = free_ports(2)
    squatter = subprocess.Popen(
        lab_command(),
        env={
            **os.environ,
            "JUPYTERHUB_SERVICE_URL": f"http://0.0.0.0:{taken}/",
            "LAB_CERT": other_cert,
            "LAB_KEY": other_key,
        },
    )
    choices = iter([taken, free])
    monkeypatch.setattr(wrapper, "free_port", lambda low, high: next(choices))
    env = {**os.environ, "JUPYTERHUB_SERVICE_URL": "https://0.0.0.0:0/", "LAB_CERT": own_cert, "LAB_KEY": own_key}
    try:
        deadline = time.monotonic() + 10
        while not wrapper.answers_as_us(taken, der_of(other_cert)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not wrapper.answers_as_us(taken, der_of(own_cert)), "the squatter does not pass as the session"
        process, port = wrapper.start_lab(
            lab_command(), env, str(tmp_path), der_of(own_cert), settings((taken, free), boot_patience=3)
        )
        process.kill()
        process.wait()
        assert port == free
    finally:
        squatter.kill()
        squatter.wait()


def test_a_lab_that_does_not_come_up_is_tried_on_other_ports_then_given_up(tmp_path, monkeypatch):
    tried = []
    monkeypatch.setattr(wrapper, "free_port", lambda low, high: tried.append(low) or low)
    failing = wrapper.Settings(port_range=(50000, 50009), lab_command=(sys.executable, "-c", "raise SystemExit(1)"))
    env = {**os.environ, "JUPYTERHUB_SERVICE_URL": "http://0.0.0.0:0/"}
    with pytest.raises(SystemExit, match=r"could not start on a free port of .* in 5 attempts"):
        wrapper.start_lab(list(failing.lab_command), env, str(tmp_path), None, failing)
    assert len(tried) == 5


# ---- the whole job ------------------------------------------------------------


def test_the_job_reports_its_listening_port_and_passes_signals_to_the_lab(tmp_path, hub):
    ports = free_ports(1)
    env = sandbox_with_session(tmp_path, hub.url, (ports[0], ports[0]), {"LAB_MARKER": str(tmp_path / "marker")})
    job = run_wrapper(tmp_path, env)
    try:
        deadline = time.monotonic() + 20
        while not hub.reports and time.monotonic() < deadline:
            time.sleep(0.05)
        assert hub.reports == [("/hub/api/condorlab/port", "token secret-token", {"port": ports[0]}, True)], (
            "one report, once the lab listened"
        )
        summary = json.loads((tmp_path / "session.summary").read_text())
        assert summary["port"] == ports[0] and summary["work_dir"] == str(tmp_path / "work")
        job.send_signal(signal.SIGTERM)  # HTCondor's vacate or remove
        assert job.wait(20) == 128 + signal.SIGTERM, "the job ends as its lab did"
    finally:
        job.kill()
    assert (tmp_path / "marker").read_text() == "SIGTERM", "the lab got the signal"


def test_a_refused_report_ends_the_lab_and_the_job(tmp_path):
    hub = Hub(status=400)
    try:
        ports = free_ports(1)
        env = sandbox_with_session(tmp_path, hub.url, (ports[0], ports[0]))
        job = run_wrapper(tmp_path, env)
        assert job.wait(20) == 1
        assert [report[2:] for report in hub.reports] == [({"port": ports[0]}, True)], "refused at once, no retry"
        assert not wrapper.answers_as_us(ports[0], None), "the lab was stopped"
    finally:
        hub.close()


def test_exit_codes_are_those_of_a_shell():
    assert wrapper.exit_code(0) == 0 and wrapper.exit_code(3) == 3
    assert wrapper.exit_code(-signal.SIGKILL) == 137
