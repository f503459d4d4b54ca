"""Figures of one running lab through the proxy, as a user's browser meets it: kernel round trip, download.

  python3 bench_lab.py URL USER TOKEN CA [ROUNDS]

URL is the proxy's public address (https://hub.localhost:8443), reached at
127.0.0.1 (run on the hub); USER's lab must be running and TOKEN be an API
token of USER's. Prints one JSON object: the round trips of a trivial cell
(execute_request "1" to its execute_reply over the kernel's websocket, ROUNDS
of them after 5 to warm up, in ms: median, p95, min, max) and the download of a
100 MiB file the kernel writes in the lab's directory (MB/s). The hub venv's
tornado is the client; the kernel's message is hubclient.py's (copied beside
this file). Asserts nothing.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import statistics
import sys
import time
import uuid
from urllib.parse import urlsplit

from hubclient import execute_request  # molecule/default/tests/hubclient.py, copied beside this file
from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from tornado.websocket import websocket_connect

SIZE = 100 * 2**20


def lab_host(url: str, user: str) -> str:
    """The lab's own origin on the test bed (subdomains): <user>.labs.<domain of the hub's name>."""
    host = urlsplit(url).hostname
    return f"{user}.labs.{host.split('.', 1)[1]}" if "." in host else host


class Lab:
    def __init__(self, url: str, user: str, token: str, ca: str):
        parts = urlsplit(url)
        self.name, self.port, self.user = lab_host(url, user), parts.port or 443, user
        self.headers = {"Authorization": f"token {token}", "Host": f"{self.name}:{self.port}"}
        context = ssl.create_default_context(cafile=ca)
        context.check_hostname = False  # the proxy is reached at 127.0.0.1; its certificate is checked by CA
        self.ssl = context

    def url(self, path: str, scheme: str = "https") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/user/{self.user}/{path}"

    async def fetch(self, path: str, method: str = "GET", body=None, timeout: float = 120):
        request = HTTPRequest(
            self.url(path),
            method=method,
            headers=self.headers,
            body=body,
            ssl_options=self.ssl,
            request_timeout=timeout,
            allow_nonstandard_methods=True,
        )
        return await AsyncHTTPClient(max_body_size=2 * SIZE).fetch(request)


async def execute(ws, session: str, code: str) -> float:
    text, msg_id = execute_request(code, "bench", session)
    began = time.perf_counter()
    await ws.write_message(text)
    while True:
        reply = json.loads(await ws.read_message())
        if reply.get("parent_header", {}).get("msg_id") == msg_id and reply["header"]["msg_type"] == "execute_reply":
            return (time.perf_counter() - began) * 1000


async def main(url: str, user: str, token: str, ca: str, rounds: int) -> dict:
    lab = Lab(url, user, token, ca)
    kernel = json.loads((await lab.fetch("api/kernels", "POST", b"{}")).body)
    try:
        ws = await websocket_connect(
            HTTPRequest(
                lab.url(f"api/kernels/{kernel['id']}/channels", "wss"), headers=lab.headers, ssl_options=lab.ssl
            )
        )
        session = uuid.uuid4().hex
        for _ in range(5):
            await execute(ws, session, "1")
        times = sorted([await execute(ws, session, "1") for _ in range(rounds)])
        await execute(ws, session, f"open('bench-100MiB.bin', 'wb').write(b'x' * {SIZE})")
        began = time.perf_counter()
        body = (await lab.fetch("files/bench-100MiB.bin")).body
        seconds = time.perf_counter() - began
        await execute(ws, session, "import os; os.remove('bench-100MiB.bin')")
        ws.close()
    finally:
        await lab.fetch(f"api/kernels/{kernel['id']}", "DELETE")
    p95 = times[min(len(times) - 1, round(0.95 * len(times) + 0.5) - 1)]
    return {
        "rtt_ms": {
            "n": len(times),
            "median": round(statistics.median(times), 2),
            "p95": round(p95, 2),
            "min": round(times[0], 2),
            "max": round(times[-1], 2),
        },
        "download": {"bytes": len(body), "seconds": round(seconds, 3), "MB_per_s": round(len(body) / 1e6 / seconds, 1)},
    }


if __name__ == "__main__":
    url, user, token, ca, *rest = sys.argv[1:]
    print(json.dumps(asyncio.run(main(url, user, token, ca, int(rest[0]) if rest else 100))))
