"""A browser-like JupyterHub client, run with python3 on a test-bed host.

Usage: python3 - COMMAND USER PASSWORD [ARGS] < hubclient.py
Prints one JSON document with what it saw. Standard library only.
"""

import base64
import html.parser
import http.cookiejar
import json
import os
import re
import socket
import ssl
import struct
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid

HUB = os.environ.get("CONDORLAB_HUB", "https://hub.localhost:8443")
# Each user's lab is on an origin of its own under the labs' domain, a site
# apart from the hub's: /user/alice/... goes to https://alice.labs.localhost:8443.
HUB_HOST = urllib.parse.urlsplit(HUB)
LABS_DOMAIN = os.environ.get("CONDORLAB_LABS_DOMAIN", "labs.localhost")


def url_of(path: str, origins: dict | None = None) -> str:
    """The URL of a path: a lab's (/user/NAME/...) on its user's origin, the hub's on the hub's.

    JupyterHub encodes names that are not a DNS label (erin.lee -> u-erinlee--<hash>);
    origins holds what the hub's API said a user's server URL is.
    """
    parts = path.split("/")
    if len(parts) > 2 and parts[1] == "user" and parts[2]:
        origin = (origins or {}).get(parts[2]) or f"{HUB_HOST.scheme}://{parts[2]}.{LABS_DOMAIN}:{HUB_HOST.port}"
        return origin + path
    return HUB + path


DNS_LABEL = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")

# The CA of the hub's public certificate (the test bed's generated one).
CA_FILE = os.environ.get("CONDORLAB_HUB_CA", "/tmp/condorlab-public-ca.crt")
# With CONDORLAB_LOGIN=oidc the client logs in through the OpenID Connect
# provider, whose certificate is checked against this CA.
LOGIN = os.environ.get("CONDORLAB_LOGIN", "pam")
IDP_CA_FILE = os.environ.get("CONDORLAB_IDP_CA", "/tmp/condorlab-idp-ca.crt")


class LoginForm(html.parser.HTMLParser):
    """The fields of the provider's login form (hidden ones included), as a browser would send them."""

    def __init__(self):
        super().__init__()
        self.fields: dict[str, str] = {}
        self.in_form = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.in_form = True
        elif tag == "input" and self.in_form and attrs.get("name") and attrs.get("type") != "checkbox":
            self.fields[attrs["name"]] = attrs.get("value") or ""

    def handle_endtag(self, tag):
        if tag == "form":
            self.in_form = False


class Client:
    def __init__(self, user: str, password: str):
        self.user = user
        self.jar = http.cookiejar.CookieJar()
        self.context = ssl.create_default_context(cafile=CA_FILE)
        if LOGIN == "oidc":
            self.context.load_verify_locations(cafile=IDP_CA_FILE)
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.jar), urllib.request.HTTPSHandler(context=self.context)
        )
        self.password = password
        self.origins: dict[str, str] = {}
        self.oidc: dict = {}

    def learn_origin(self, model: dict) -> None:
        """Take a user's lab origin from the server URL in the hub's user model."""
        url = ((model.get("servers") or {}).get("") or {}).get("url", "")
        if url.startswith("https://"):
            parts = urllib.parse.urlsplit(url)
            self.origins[model["name"]] = f"{parts.scheme}://{parts.netloc}"

    def xsrf(self, path: str = "/hub/") -> str:
        """The _xsrf cookie the hub or the user's server set for this path."""
        cookies = [c for c in self.jar if c.name == "_xsrf" and path.startswith(c.path)]
        cookies.sort(key=lambda c: len(c.path), reverse=True)
        return cookies[0].value if cookies else ""

    def request(self, method: str, path: str, body=None, headers=None, form=None):
        headers = dict(headers or {})
        data = None
        if form is not None:
            data = urllib.parse.urlencode(form).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        elif body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if self.xsrf(path):
            headers["X-XSRFToken"] = self.xsrf(path)
        url = path if path.startswith("https://") else url_of(path, self.origins)
        req = urllib.request.Request(url, data=data, headers=headers, method=method)
        try:
            with self.opener.open(req, timeout=30) as resp:
                return resp.status, resp.geturl(), resp.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.geturl(), exc.read().decode(errors="replace")

    def login(self) -> int:
        if LOGIN == "oidc":
            return self.login_oidc()
        self.request("GET", "/hub/login")
        status, url, _ = self.request(
            "POST", "/hub/login", form={"username": self.user, "password": self.password, "_xsrf": self.xsrf()}
        )
        return 200 if status == 200 and "/hub/login" not in url else 403

    def login_oidc(self) -> int:
        """The authorization-code flow as a browser goes through it: the hub sends the browser to the
        provider, whose login form posts back to the same URL; the provider sends the browser back to
        the hub's callback with a code, which the hub exchanges for the user's claims."""
        self.oidc = {}
        status, url, text = self.request("GET", "/hub/oauth_login?next=/hub/home")
        self.oidc["provider_url"] = url.split("?")[0]
        form = LoginForm()
        form.feed(text)
        if status != 200 or "password" not in form.fields:
            self.oidc.update({"status": status, "text": text[:2000]})
            return 0
        fields = {**form.fields, "user": self.user, "password": self.password}
        status, url, text = self.request("POST", url, form=fields)
        self.oidc.update({"status": status, "url": url, "text": text[:20000]})
        if status == 200 and url.startswith(HUB) and "/hub/login" not in url:
            return 200
        return status if status >= 400 else 401  # refused by the hub / still at the provider

    def start(self, timeout: float, options: dict | None = None) -> dict:
        t0 = time.monotonic()
        status, _, text = self.request("POST", f"/hub/api/users/{self.user}/server", body=options or {})
        result = {"start_status": status, "start_text": text[:500]}
        if status >= 400:
            return result
        while time.monotonic() - t0 < timeout:
            _, _, text = self.request("GET", f"/hub/api/users/{self.user}")
            model = json.loads(text) if text.startswith("{") else {}
            server = (model.get("servers") or {}).get("", {})
            if server.get("ready"):
                result["ready_after"] = time.monotonic() - t0
                self.learn_origin(model)
                result["server"] = server
                return result
            if not model.get("pending") and not server:
                result["failed_after"] = time.monotonic() - t0
                _, _, progress = self.request("GET", f"/hub/api/users/{self.user}/server/progress")
                result["progress"] = progress[-2000:]
                return result
            time.sleep(0.2)
        result["timeout"] = True
        return result

    def progress(self, seconds: float, options: dict | None = None) -> dict:
        """Ask for a session and read the pending page's event stream for a while, as the page does."""
        status, _, text = self.request("POST", f"/hub/api/users/{self.user}/server", body=options or {})
        result = {"start_status": status, "start_text": text[:500], "messages": []}
        if status >= 400:
            return result
        req = urllib.request.Request(url_of(f"/hub/api/users/{self.user}/server/progress"))
        deadline = time.monotonic() + seconds
        try:
            with self.opener.open(req, timeout=seconds) as resp:
                while time.monotonic() < deadline:
                    line = resp.readline().decode(errors="replace").strip()
                    if not line:
                        continue
                    if line.startswith("data:"):
                        event = json.loads(line[5:])
                        result["messages"].append(event.get("message", ""))
                        if event.get("ready") or event.get("failed"):
                            break
        except (TimeoutError, OSError) as exc:
            result["stream_end"] = str(exc)
        return result

    def open_lab(self, user: str) -> bool:
        """Open a user's lab as a browser does: learn its origin from the hub, follow the OAuth redirects.

        False when the hub did not say where the server is (another user's, none
        running): a DNS-label name is then tried on its usual origin.
        """
        _, _, text = self.request("GET", f"/hub/api/users/{user}")
        if text.startswith("{"):
            self.learn_origin(json.loads(text))
        if user not in self.origins and not DNS_LABEL.fullmatch(user):
            return False
        self.request("GET", f"/user/{user}/lab")
        return True

    def token(self, note: str = "fault suite") -> str:
        """A new API token of the user's, as made on the hub's token page (its scopes: the user's own)."""
        status, _, text = self.request(
            "POST", f"/hub/api/users/{self.user}/tokens", body={"note": note, "expires_in": 3600}
        )
        if status != 201:
            raise SystemExit(f"token request: {status} {text[:300]}")
        return json.loads(text)["token"]

    def watch(self, seconds: float, path: str, stop_file: str = "", interval: float = 0.2) -> dict:
        """GET a lab path by cookie (a browser in the lab) and by API token until stop_file exists (or for
        ``seconds``), and count the answers.

        Every request that does not get 200 is listed with when it was made
        (epoch seconds) and what came back; first and last give the span the
        requests covered. A round of requests every ``interval`` seconds.
        """
        if not self.open_lab(self.user):
            raise SystemExit(f"the hub did not say where {self.user}'s server is")
        token = self.token()
        print("watching", file=sys.stderr, flush=True)
        answers = {"cookie": {}, "token": {}}
        failures = []
        first = last_request = time.time()
        t0 = time.monotonic()
        while time.monotonic() - t0 < seconds and not (stop_file and os.path.exists(stop_file)):
            for kind in ("cookie", "token"):
                at = last_request = time.time()
                try:
                    if kind == "token":
                        req = urllib.request.Request(
                            url_of(path, self.origins), headers={"Authorization": f"token {token}"}
                        )
                        # Without the cookie jar: the token alone authenticates.
                        with urllib.request.urlopen(req, timeout=10, context=self.context) as resp:
                            status = resp.status
                    else:
                        status = self.request("GET", path)[0]
                except urllib.error.HTTPError as exc:
                    status = exc.code
                except OSError as exc:
                    status = f"error: {exc}"
                answers[kind][str(status)] = answers[kind].get(str(status), 0) + 1
                if status != 200:
                    failures.append({"kind": kind, "at": round(at, 2), "status": str(status)})
            time.sleep(interval)
        return {
            "answers": answers,
            "failures": failures[:50],
            "first": first,
            "last": time.time(),
            "last_request": last_request,
        }

    def run(self, code: str, timeout: float = 120) -> dict:
        """Run code in a new kernel of the user's own lab, as the notebook page does (the kernels API and
        the kernel's websocket, through the proxy, by the user's API token): its output and status."""
        if not self.open_lab(self.user):
            raise SystemExit(f"the hub did not say where {self.user}'s server is")
        headers = {"Authorization": f"token {self.token('lab kernel')}"}
        status, _, text = self.request("POST", f"/user/{self.user}/api/kernels", body={}, headers=headers)
        if status != 201:
            raise SystemExit(f"kernel start: {status} {text[:300]}")
        kernel = json.loads(text)["id"]
        try:
            url = urllib.parse.urlsplit(url_of(f"/user/{self.user}/api/kernels/{kernel}/channels", self.origins))
            ws = WebSocket(url, headers, self.context)
            request, msg_id = execute_request(code, self.user, uuid.uuid4().hex)
            ws.send(request)
            # The reply comes on the shell channel, the output on IOPub, in no fixed order: the
            # output is complete once IOPub says the kernel is idle again after this request.
            out, error, status, idle, deadline = [], "", "", False, time.monotonic() + timeout
            while time.monotonic() < deadline and not (status and idle):
                message = json.loads(ws.receive(deadline - time.monotonic()))
                if message.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind, content = message["msg_type"], message["content"]
                if kind == "stream":
                    out.append(content["text"])
                elif kind == "error":
                    error = f"{content['ename']}: {content['evalue']}"
                elif kind == "execute_reply":
                    status = content["status"]
                elif kind == "status":
                    idle = content.get("execution_state") == "idle"
            return {"status": status if idle else "timeout", "stdout": "".join(out), "error": error}
        finally:
            self.request("DELETE", f"/user/{self.user}/api/kernels/{kernel}", headers=headers)

    def stop(self) -> dict:
        t0 = time.monotonic()
        status, _, text = self.request("DELETE", f"/hub/api/users/{self.user}/server")
        while time.monotonic() - t0 < 120:
            _, _, text = self.request("GET", f"/hub/api/users/{self.user}")
            model = json.loads(text) if text.startswith("{") else {}
            if not model.get("servers") and not model.get("pending"):
                return {"stop_status": status, "stopped_after": time.monotonic() - t0}
            time.sleep(0.5)
        return {"stop_status": status, "timeout": True}


def execute_request(code: str, username: str, session: str) -> tuple[str, str]:
    """A kernel's execute_request for code (the Jupyter messaging protocol, on the shell channel of the
    kernel's websocket), as JSON, and its msg_id, which the kernel's replies carry as their parent's."""
    msg_id = uuid.uuid4().hex
    header = {
        "msg_id": msg_id,
        "username": username,
        "session": session,
        "msg_type": "execute_request",
        "version": "5.3",
        "date": "",
    }
    content = {
        "code": code,
        "silent": False,
        "store_history": False,
        "user_expressions": {},
        "allow_stdin": False,
        "stop_on_error": True,
    }
    message = {"header": header, "parent_header": {}, "metadata": {}, "channel": "shell", "content": content}
    return json.dumps(message), msg_id


class WebSocket:
    """A minimal websocket client (RFC 6455: text frames, masked, ping answered) over TLS."""

    def __init__(self, url, headers: dict, context: ssl.SSLContext):
        raw = socket.create_connection((url.hostname, url.port or 443), timeout=30)
        self.sock = context.wrap_socket(raw, server_hostname=url.hostname)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = [
            f"GET {url.path}?{url.query} HTTP/1.1",
            f"Host: {url.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            *(f"{k}: {v}" for k, v in headers.items()),
        ]
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise SystemExit("websocket: closed during the handshake")
            answer += chunk
        head, self.buffer = answer.split(b"\r\n\r\n", 1)
        if not head.startswith(b"HTTP/1.1 101"):
            raise SystemExit(f"websocket: {head.decode(errors='replace')[:200]}")

    def _read(self, count: int) -> bytes:
        while len(self.buffer) < count:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise SystemExit("websocket: closed")
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def _frame(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        size = len(payload)
        head = bytes([0x80 | opcode])
        if size < 126:
            head += bytes([0x80 | size])
        elif size < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", size)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", size)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send(self, text: str) -> None:
        self._frame(0x1, text.encode())

    def receive(self, timeout: float) -> str:
        self.sock.settimeout(max(0.1, timeout))
        parts = []
        while True:
            first, second = self._read(2)
            size = second & 0x7F
            if size == 126:
                size = struct.unpack("!H", self._read(2))[0]
            elif size == 127:
                size = struct.unpack("!Q", self._read(8))[0]
            payload = self._read(size)
            opcode = first & 0x0F
            if opcode == 0x9:
                self._frame(0xA, payload)
            elif opcode == 0x8:
                raise SystemExit("websocket: closed by the lab")
            elif opcode in (0x0, 0x1):
                parts.append(payload)
                if first & 0x80:
                    return b"".join(parts).decode()


def main() -> None:
    command, user, password, *args = sys.argv[1:]
    client = Client(user, password)
    out = {"login": client.login()}
    if LOGIN == "oidc":
        out["oidc"] = client.oidc
    if command == "login":
        pass
    elif command == "start":
        options = json.loads(args[1]) if len(args) > 1 else None
        out.update(client.start(float(args[0]) if args else 180, options))
    elif command == "stop":
        out.update(client.stop())
    elif command == "progress":
        options = json.loads(args[1]) if len(args) > 1 else None
        out.update(client.progress(float(args[0]), options))
    elif command == "get":
        # GET a path (e.g. /user/alice/api/status) after opening that lab's page, as a browser
        # does: the OAuth redirects give the client the server's cookie.
        if args[0].startswith("/user/") and not client.open_lab(args[0].split("/")[2]):
            out.update({"status": 0, "url": "", "text": "the hub did not say where this server is"})
            print(json.dumps(out))
            return
        status, url, text = client.request("GET", args[0])
        out.update({"status": status, "url": url, "text": text[:100000]})
    elif command in ("put", "post"):
        # Open the lab first, as a browser does: the server sets its own _xsrf cookie.
        client.open_lab(args[0].split("/")[2])
        body = json.loads(args[1]) if len(args) > 1 else {}
        status, url, text = client.request(command.upper(), args[0], body=body)
        out.update({"status": status, "url": url, "text": text[:100000]})
    elif command == "token":
        # A new API token of the user's, for requests a browser would not make.
        out["token"] = client.token(args[0] if args else "condorlab tests")
    elif command == "run":
        # Run code in a kernel of the user's own lab: run USER PASSWORD CODE [TIMEOUT]
        out.update(client.run(args[0], float(args[1]) if len(args) > 1 else 120))
    elif command == "watch":
        out.update(client.watch(float(args[0]), args[1], args[2] if len(args) > 2 else "", *map(float, args[3:4])))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
