"""condorlab-session: the executable of a condorlab session job.

Runs in the job's sandbox, as the user, like any batch job:

  condorlab-session SESSION_FILE SUMMARY_FILE

(names given by the submit description, from the hub's contract.py). It reads
the session's environment from SESSION_FILE and its TLS key, certificate and
CA bundle from the files beside it (0600 files Condor transferred with the
job; neither the API token nor the key is ever in the job's ClassAd or command
line) and starts the JupyterLab singleuser server on a Unix socket in the
sandbox (in a directory only the user may enter), serving only TLS clients with
a certificate of the hub's internal CAs, opened in the shared area or in the
transferred work directory. No port of the node is opened: the hub reaches the
socket through condor_ssh_to_job (hub/condorlab/tunnel.py).

The socket's path is reported to the hub (over mutual TLS) once the lab
answers there with this session's own certificate. This process stays as the
lab's parent, passes signals on to it (HTCondor's vacate and remove) and ends
with its exit code.

The lab reaches the pool as its user: this process asks the hub (the same
channel) for an HTCondor token of the user's own, short-lived, keeps it in a
0700 directory of the sandbox, renews it while the session runs, and gives the
lab an environment in which HTCondor's tools and bindings use it against the
access point's schedd (TokenKeeper).

Its settings (Settings) come from SETTINGS_FILE in the runtime's virtualenv,
which the singleuser role writes.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime

# The node's settings, in the runtime's virtualenv (as Jupyter keeps its own in <prefix>/etc/jupyter).
SETTINGS_FILE = os.path.join(sys.prefix, "etc", "condorlab", "session.json")
# The session's TLS files, named relative to the sandbox by the hub.
TLS_VARIABLES = ("JUPYTERHUB_SSL_KEYFILE", "JUPYTERHUB_SSL_CERTFILE", "JUPYTERHUB_SSL_CLIENT_CA")
# The names a job submitted before the submit description named its files used.
LEGACY_ARGUMENTS = ("session.json", "session.summary")
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)


# The lab's socket, in the sandbox (0700, the user's): <sandbox>/<SOCKET_NAME>.
SOCKET_NAME = os.path.join(".condorlab", "lab.sock")
# The lab's HTCondor token, in the sandbox: <sandbox>/<TOKEN_DIR>/<TOKEN_NAME> (0700, 0600),
# and the access point's schedd address file beside it (its tools' local schedd).
TOKEN_DIR = os.path.join(".condorlab", "tokens.d")
SCHEDD_ADDRESS = os.path.join(".condorlab", "schedd.address")
TOKEN_NAME = "session"  # noqa: S105 - a file name, not a secret
# Jupyter Server's default port: the only one it accepts along with a socket.
JUPYTER_DEFAULT_PORT = 8888
# A Unix socket's path is at most 107 bytes (sun_path).
SOCKET_PATH_MAX = 107
# In the lab's work directory: the example notebooks already given to this user (ship_examples).
EXAMPLES_SHIPPED = ".condorlab-examples"


@dataclass(frozen=True)
class Settings:
    """What the node's settings file may set."""

    report_patience: float = 300  # how long to keep trying to report the socket (the hub may be restarting)
    boot_patience: float = 120  # how long the lab may take to listen
    lab_command: tuple[str, ...] = field(default=(os.path.join(sys.prefix, "bin", "jupyterhub-singleuser"),))
    examples_dir: str = ""  # notebooks every new lab gets once (ship_examples); none if empty

    @classmethod
    def load(cls, path: str = SETTINGS_FILE) -> Settings:
        """The settings file's values over the defaults (SystemExit naming the setting if it cannot be used)."""
        try:
            with open(path) as handle:
                values = json.load(handle)
        except (OSError, ValueError) as exc:
            raise SystemExit(f"cannot read the node's session settings {path} ({exc}); run site.yml") from None
        unknown = sorted(set(values) - set(cls.__dataclass_fields__))
        if unknown:
            raise SystemExit(f"{path}: unknown setting(s) {', '.join(unknown)}")
        if "lab_command" in values:
            values["lab_command"] = tuple(values["lab_command"])
        return cls(**values)


def log(message: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    print(f"[condorlab-session {stamp}] {message}", file=sys.stderr, flush=True)


def tls_context(env: dict) -> ssl.SSLContext | None:
    """Client context for the hub's API: its CA, and this session's certificate."""
    if not env.get("JUPYTERHUB_SSL_CERTFILE"):
        return None
    context = ssl.create_default_context(cafile=env["JUPYTERHUB_SSL_CLIENT_CA"])
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(env["JUPYTERHUB_SSL_CERTFILE"], env["JUPYTERHUB_SSL_KEYFILE"])
    return context


def own_certificate(env: dict) -> bytes | None:
    """This session's certificate (DER), or None without internal TLS."""
    if not env.get("JUPYTERHUB_SSL_CERTFILE"):
        return None
    with open(env["JUPYTERHUB_SSL_CERTFILE"]) as handle:
        return ssl.PEM_cert_to_DER_cert(handle.read())


def connect(path: str) -> socket.socket:
    """A connection to the lab's socket."""
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(2)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        raise
    return conn


def answers_as_us(path: str, certificate: bytes | None) -> bool:
    """Whether the lab listens on its socket: with our own certificate under TLS."""
    try:
        with connect(path) as raw:
            if certificate is None:
                return True
            # Only the server's certificate matters here; TLS 1.3 shows it
            # before the server asks for ours.
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
            context.minimum_version = ssl.TLSVersion.TLSv1_3
            with context.wrap_socket(raw) as tls:
                return tls.getpeercert(binary_form=True) == certificate
    except (OSError, ssl.SSLError):
        return False


def lab_socket(sandbox: str) -> str:
    """The lab's socket path in the sandbox, in a directory only the user may enter."""
    path = os.path.join(sandbox, SOCKET_NAME)
    if len(path.encode()) > SOCKET_PATH_MAX:
        raise SystemExit(f"the sandbox path {sandbox} is too long for a Unix socket ({len(path)} > {SOCKET_PATH_MAX})")
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.lexists(path):
        os.unlink(path)  # a leftover of an earlier run of this job (a restart after eviction)
    return path


def start_lab_on_socket(
    command: list[str], env: dict, work_dir: str, certificate: bytes | None, settings: Settings, sandbox: str
) -> tuple[subprocess.Popen, str]:
    """Start the lab on its socket; return (process, path) once it answers there as this session."""
    path = lab_socket(sandbox)
    # jupyterhub-singleuser takes its port from the service URL, and Jupyter
    # Server listens on the socket alone only when that is its default port.
    set_service_address(env, "127.0.0.1", JUPYTER_DEFAULT_PORT)
    log(f"starting JupyterLab on {socket.gethostname()}:{path} in {work_dir}")
    process = launch([*command, f"--ServerApp.sock={path}"], env, work_dir, path, certificate, settings)
    if process.returncode is None:
        return process, path
    raise SystemExit(f"JupyterLab did not come up on its socket (exit {process.returncode})")


def set_service_address(env: dict, host: str, port: int) -> None:
    """Point JUPYTERHUB_SERVICE_URL (where jupyterhub-singleuser listens) at host:port, keeping its path."""
    scheme, rest = env.get("JUPYTERHUB_SERVICE_URL", "http://0.0.0.0:0/").split("://", 1)
    env["JUPYTERHUB_SERVICE_URL"] = f"{scheme}://{host}:{port}/{rest.partition('/')[2]}"


def launch(
    command: list[str], env: dict, work_dir: str, path: str, certificate: bytes | None, settings: Settings
) -> subprocess.Popen:
    """Start the lab; the running process once it answers on its socket as this session, else the
    ended one (after boot_patience it is stopped)."""
    process = subprocess.Popen(command, env=env, cwd=work_dir)  # noqa: S603 - the runtime's own command
    deadline = time.monotonic() + settings.boot_patience
    while process.poll() is None and time.monotonic() < deadline:
        if answers_as_us(path, certificate):
            return process
        time.sleep(0.1)
    if process.poll() is None:
        process.terminate()
        process.wait()
    return process


def report_socket(api_url: str, token: str, path: str, context: ssl.SSLContext | None, patience: float) -> None:
    """Tell the hub where the lab listens (its socket's path); retry while the hub does not answer,
    give up at once if it refuses."""
    request = urllib.request.Request(  # noqa: S310 - the hub's API URL, https with internal TLS
        api_url.rstrip("/") + "/condorlab/port",
        data=json.dumps({"socket": path}).encode(),  # handlers.py
        headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
        method="POST",
    )
    deadline = time.monotonic() + patience
    attempt = 0
    while True:
        attempt += 1
        try:
            with urllib.request.urlopen(request, timeout=10, context=context):  # noqa: S310
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:  # refused: this session is not wanted (any more)
                raise SystemExit(
                    f"the hub refused the socket report: {exc.code} {exc.read().decode(errors='replace')}"
                ) from None
            log(f"socket report attempt {attempt}: the hub answered {exc.code}")
        except OSError as exc:
            log(f"socket report attempt {attempt} failed: {exc}")
        if time.monotonic() > deadline:
            raise SystemExit("could not reach the hub to report the lab's socket")
        time.sleep(min(attempt, 5))


class TokenKeeper:
    """The lab's HTCondor token: fetched from the hub (handlers.TokenHandler) with the session's own API
    token over mutual TLS, kept in the sandbox, renewed every third of its lifetime until the hub says
    the session is over."""

    RETRY = 10  # seconds between attempts after a failure (the hub may be restarting)

    def __init__(self, api_url: str, token: str, context: ssl.SSLContext | None, sandbox: str):
        self.url = api_url.rstrip("/") + "/condorlab/token"
        self.headers = {"Authorization": f"token {token}", "Content-Type": "application/json"}
        self.context = context
        self.directory = os.path.join(sandbox, TOKEN_DIR)
        self.schedd_file = os.path.join(sandbox, SCHEDD_ADDRESS)
        self.lifetime = 0
        self.stopped = threading.Event()

    def fetch(self) -> bool | None:
        """Fetch and store a fresh token: True; False after a failure worth retrying; None when the hub
        gives this lab no token (the site gives none, or the session is over)."""
        request = urllib.request.Request(self.url, data=b"{}", headers=self.headers, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=30, context=self.context) as answer:  # noqa: S310
                body = json.load(answer)
            value, lifetime, schedd = body["token"], int(body["lifetime"]), body.get("schedd") or ""
            if not isinstance(value, str) or "\n" in value or lifetime <= 0 or not isinstance(schedd, str):
                raise ValueError("not a token")
        except urllib.error.HTTPError as exc:
            if exc.code in (401, 403, 404, 409):
                log(f"no HTCondor token for the lab: the hub answered {exc.code}")
                return None
            log(f"HTCondor token: the hub answered {exc.code}")
            return False
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log(f"HTCondor token: {exc.__class__.__name__}")  # never the answer: it may hold the token
            return False
        os.makedirs(self.directory, mode=0o700, exist_ok=True)
        os.chmod(self.directory, 0o700)
        self.store(os.path.join(self.directory, TOKEN_NAME), value + "\n")
        if schedd.startswith("<"):  # the schedd's address changes when it restarts: kept current here
            self.store(self.schedd_file, schedd)
        self.lifetime = lifetime
        return True

    @staticmethod
    def store(path: str, text: str) -> None:
        """Replace a file at once (0600): HTCondor's tools never read half of it."""
        temporary = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.new")
        if os.path.lexists(temporary):
            os.unlink(temporary)
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(temporary, path)

    def environment(self) -> dict:
        """What the lab's HTCondor tools and bindings need: this token only, and the access point's schedd
        as their local one (by its address: no name lookup, whatever the names are on this node)."""
        return {
            "_CONDOR_SEC_TOKEN_DIRECTORY": self.directory,
            "_CONDOR_SEC_CLIENT_AUTHENTICATION_METHODS": "IDTOKENS",
            "_CONDOR_SCHEDD_ADDRESS_FILE": self.schedd_file,
        }

    def keep(self) -> None:
        """Fetch the token at once, then renew it every third of its lifetime (every RETRY seconds after a
        failure) until the hub gives none: the site gives labs none, or the session is over."""
        wait = 0.0
        while not self.stopped.wait(wait):
            done = self.fetch()
            if done is None:
                return
            wait = max(self.RETRY, self.lifetime // 3) if done else self.RETRY

    def start(self) -> None:
        threading.Thread(target=self.keep, name="token", daemon=True).start()


def write_summary(path: str, **facts) -> None:
    """The summary file comes back to the hub with the job, whatever happens."""
    with open(path, "w") as summary:
        json.dump({"host": socket.getfqdn(), **facts}, summary)


def lab_environment(session: dict, sandbox: str) -> tuple[dict, str]:
    """(the lab's environment, its work directory) from the session file's contents."""
    env = dict(os.environ)
    env.update({k: str(v) for k, v in session["env"].items()})
    for name in TLS_VARIABLES:
        if env.get(name) and not os.path.isabs(env[name]):
            env[name] = os.path.join(sandbox, env[name])
    work_dir = session["work_dir"]
    if not os.path.isabs(work_dir):
        work_dir = os.path.join(sandbox, work_dir)
    runtime = os.path.join(sandbox, ".jupyter-runtime")
    env["JUPYTER_RUNTIME_DIR"] = runtime
    os.makedirs(work_dir, exist_ok=True)
    os.makedirs(runtime, exist_ok=True)
    # The hub's idea of HOME may not exist on this node.
    if not os.path.isdir(env.get("HOME", "")):
        env["HOME"] = work_dir
    env["PATH"] = os.path.join(sys.prefix, "bin") + ":" + env.get("PATH", "/usr/bin:/bin")
    return env, work_dir


def ship_examples(examples_dir: str, work_dir: str) -> list[str]:
    """Copy the site's example notebooks into the lab's work directory, each once: one the user has
    deleted or changed is left alone (EXAMPLES_SHIPPED in the work directory lists those shipped).
    Returns the names copied; a failure is logged, never fatal."""
    if not examples_dir:
        return []
    record = os.path.join(work_dir, EXAMPLES_SHIPPED)
    copied = []
    try:
        names = sorted(n for n in os.listdir(examples_dir) if os.path.isfile(os.path.join(examples_dir, n)))
        try:
            with open(record) as handle:
                shipped = set(handle.read().split())
        except FileNotFoundError:
            shipped = set()
        for name in names:
            target = os.path.join(work_dir, name)
            if name in shipped or os.path.lexists(target):
                continue
            shutil.copyfile(os.path.join(examples_dir, name), target)
            copied.append(name)
        if copied:
            with open(record, "a") as handle:
                handle.write("".join(f"{name}\n" for name in copied))
    except OSError as exc:
        log(f"could not copy the example notebooks from {examples_dir}: {exc}")
    return copied


def forward_signals(process: subprocess.Popen) -> None:
    """HTCondor's vacate and remove signals reach this process: pass them on to the lab."""
    for signum in FORWARDED_SIGNALS:
        signal.signal(signum, lambda number, _frame: process.send_signal(number))


def exit_code(code: int) -> int:
    """The lab's exit status as a shell reports it (128 + N when signal N ended it)."""
    return code if code >= 0 else 128 - code


def main(argv: list[str] | None = None, settings_file: str = SETTINGS_FILE) -> None:
    args = list(sys.argv[1:] if argv is None else argv) or list(LEGACY_ARGUMENTS)
    if len(args) != 2:
        raise SystemExit("usage: condorlab-session SESSION_FILE SUMMARY_FILE")
    sandbox = os.environ.get("_CONDOR_SCRATCH_DIR") or os.getcwd()
    session_file, summary_file = (os.path.join(sandbox, os.path.basename(name)) for name in args)
    os.umask(0o077)
    write_summary(summary_file, started=time.time())  # first: the job's output is there whatever happens
    settings = Settings.load(settings_file)
    with open(session_file) as handle:
        env, work_dir = lab_environment(json.load(handle), sandbox)
    ship_examples(settings.examples_dir, work_dir)
    command = [*settings.lab_command, f"--ServerApp.root_dir={work_dir}"]
    # The token comes while the lab starts (a start does not wait for it).
    tokens = TokenKeeper(env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], tls_context(env), sandbox)
    env.update(tokens.environment())
    tokens.start()
    process, path = start_lab_on_socket(command, env, work_dir, own_certificate(env), settings, sandbox)
    forward_signals(process)
    write_summary(summary_file, socket=path, work_dir=work_dir, started=time.time())
    try:
        report_socket(
            env["JUPYTERHUB_API_URL"], env["JUPYTERHUB_API_TOKEN"], path, tls_context(env), settings.report_patience
        )
    except SystemExit:
        process.terminate()
        process.wait()
        raise
    sys.exit(exit_code(process.wait()))


if __name__ == "__main__":
    main()
