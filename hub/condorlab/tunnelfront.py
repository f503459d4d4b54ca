"""condorlab-tunnel-front: hold the tunnel ports on loopback; pass each connection on to its tunnel's end.

  condorlab-tunnel-front [SETTINGS_FILE]

Started with the access point (its own systemd unit), before users' sessions,
it listens on 127.0.0.1 on every port of the tunnel range it can take and keeps
them for as long as it runs: no other account can take a tunnel's port, before
its tunnel opens or while it is re-established. A connection to PORT is passed
on to TUNNEL_DIR/PORT/end.sock, the hub-side end of that port's tunnel
(tunnel.py), byte for byte; it never looks inside (TLS runs end to end between
the proxy or the hub and the lab). While a tunnel is being re-established, the
connection waits for its end up to END_PATIENCE seconds instead of failing.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import sys

from .tunnel import END_NAME, SETTINGS_FILE, TUNNEL_DIR, TunnelSettings

END_PATIENCE = 10.0  # seconds a connection waits for its tunnel's end to appear
CHUNK = 256 * 1024

log = logging.getLogger("condorlab-tunnel-front")


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy one direction until its end closes or fails."""
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass


async def splice(a: tuple, b: tuple) -> None:
    """Both directions between two connections; when either side ends, both are closed.

    TLS runs end to end and needs no half-close: a client (the proxy) left half-open while the tunnel's
    end is gone would wait for an answer that never comes.
    """
    tasks = [asyncio.ensure_future(pipe(a[0], b[1])), asyncio.ensure_future(pipe(b[0], a[1]))]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for _, writer in (a, b):
            writer.close()


def check_end(path: str) -> None:
    """Refuse anything at a tunnel's end but a socket: its directory is the user's, who could put a link to
    another tunnel's end there (which would only fail the proxy's and the hub's certificate checks)."""
    if not stat.S_ISSOCK(os.lstat(path).st_mode):
        raise PermissionError(f"{path} is not a socket")


async def open_end(path: str, patience: float) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Connect to a tunnel's end, waiting for it while its tunnel is (re-)established."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + patience
    while True:
        try:
            check_end(path)
            return await asyncio.open_unix_connection(path)
        except PermissionError:
            raise
        except OSError:
            if loop.time() >= deadline:
                raise
            await asyncio.sleep(0.2)


class Front:
    def __init__(self, tunnel_dir: str = TUNNEL_DIR, patience: float = END_PATIENCE):
        self.tunnel_dir, self.patience = tunnel_dir, patience

    def handler(self, port: int):
        async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            # No Nagle: asyncio sets TCP_NODELAY only on sockets it made itself with
            # IPPROTO_TCP, and a reply's small TLS records would otherwise wait for
            # the proxy's delayed ACK (40 ms per kernel round trip).
            writer.get_extra_info("socket").setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            directory = os.path.join(self.tunnel_dir, str(port))
            try:
                if not os.path.isdir(directory):
                    raise FileNotFoundError(f"no tunnel on port {port}")
                end_reader, end_writer = await open_end(os.path.join(directory, END_NAME), self.patience)
            except OSError as exc:
                log.info("Connection to port %s: %s", port, exc)
                writer.close()
                return
            await splice((reader, writer), (end_reader, end_writer))

        return serve

    async def listen(self, low: int, high: int) -> list[asyncio.Server]:
        servers = []
        for port in range(low, high + 1):
            try:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.bind(("127.0.0.1", port))
            except OSError as exc:
                sock.close()
                log.warning("Cannot hold tunnel port %s (%s); no tunnel will use it", port, exc)
                continue
            servers.append(await asyncio.start_server(self.handler(port), sock=sock, backlog=128))
        return servers


async def run(settings: TunnelSettings) -> None:
    servers = await Front().listen(*settings.port_range)
    low, high = settings.port_range
    log.info("Holding %s of the %s tunnel ports %s-%s", len(servers), high - low + 1, low, high)
    await asyncio.Event().wait()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s", stream=sys.stderr)
    settings = TunnelSettings.load(sys.argv[1] if len(sys.argv) > 1 else SETTINGS_FILE)
    asyncio.run(run(settings))


if __name__ == "__main__":
    main()
