"""The hub looks up execute nodes' names each time it connects, as the system does.

JupyterHub's HTTP client (aiohttp) resolves names with c-ares when aiodns is
installed, and c-ares keeps an answer for its DNS TTL, which can be a day. An
execute node that comes back on a new address would then stay unreachable to
the hub (its labs never "start", its health checks fail) while the proxy,
other hosts and every other program already reach it. The system's resolver
(getaddrinfo: nsswitch, /etc/hosts, DNS) keeps no such cache, and it is the one
the rest of the site uses.
"""

from __future__ import annotations

import asyncio
import socket

from aiohttp.resolver import ThreadedResolver


class SystemResolver(ThreadedResolver):
    """aiohttp's getaddrinfo resolver, made before an event loop runs (it takes the loop when it resolves)."""

    def __init__(self) -> None:
        self._loop = None

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET):
        self._loop = asyncio.get_running_loop()
        return await super().resolve(host, port, family)
