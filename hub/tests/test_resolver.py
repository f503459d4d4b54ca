import asyncio
import socket

from condorlab.resolver import SystemResolver


def test_it_is_made_without_a_loop_and_resolves_as_the_system_does():
    resolver = SystemResolver()  # as jupyterhub_config.py makes it, before the hub's loop may run

    async def look_up():
        return await resolver.resolve("localhost", 8443, socket.AF_INET)

    (answer, *_) = asyncio.run(look_up())
    assert answer["host"] == "127.0.0.1" and answer["port"] == 8443
    # a second loop (JupyterHub makes one client per loop) works too
    assert asyncio.run(look_up())[0]["host"] == "127.0.0.1"
