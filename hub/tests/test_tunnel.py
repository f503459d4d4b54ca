"""The tunnel command (as root) and the tunnel front: what they accept, the ports they hold, the ends they pass to."""

from __future__ import annotations

import asyncio
import os
import pwd
import socket
import stat

import pytest
from condorlab import tunnel, tunnelfront
from condorlab.tunnel import TunnelError, Tunnels, TunnelSettings

SOCKET = "/var/lib/condor/execute/dir_42/.condorlab/lab.sock"


@pytest.mark.parametrize(
    "args",
    [
        ["open", "alice", "default", "12"],
        ["open", "alice", "default", "12", SOCKET, "extra"],
        ["open", "root;id", "default", "12", SOCKET],
        ["open", "alice", "../x", "12", SOCKET],
        ["open", "alice", "default", "12.0", SOCKET],
        ["open", "alice", "default", "12", "relative/lab.sock"],
        ["open", "alice", "default", "12", "/tmp/../etc/lab.sock"],
        ["open", "alice", "default", "12", "/tmp/lab.sock -o ProxyCommand=id"],
        ["open", "alice", "default", "12", "/tmp/a:b.sock"],
        ["open", "alice", "default", "12", "/" + "a" * 120 + ".sock"],
        ["close", "alice"],
        ["kill", "alice", "default"],
    ],
)
def test_the_command_refuses_anything_but_its_two_verbs_with_checked_arguments(args):
    with pytest.raises(TunnelError):
        tunnel.parse_args(args)


def test_the_command_takes_open_and_close():
    opened = tunnel.parse_args(["open", "alice", "named-x", "12", SOCKET])
    assert opened == ("open", "alice", "named-x", 12, SOCKET, None)
    assert tunnel.parse_args(["open", "alice", "default", "12", SOCKET, "30004"])[-1] == 30004
    assert tunnel.parse_args(["close", "alice", "default"]) == ("close", "alice", "default", None, None, None)
    for bad in ("0", "70000", "x", "-1"):
        with pytest.raises(TunnelError):
            tunnel.parse_args(["open", "alice", "default", "12", SOCKET, bad])


GOOD = {"Owner": "alice", "CondorlabServer": "alice/default", "CondorlabSealed": True, "JobStatus": 2}


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"Owner": "bob"}, "owner is 'bob'"),
        ({"CondorlabServer": "alice/named-x"}, "names server"),
        ({"CondorlabSealed": None}, "not a sealed session job"),
        ({"JobStatus": 1}, "not running"),
    ],
)
def test_a_tunnel_opens_only_to_the_running_sealed_session_job_of_that_server(change, problem):
    tunnel.check_job(GOOD, "alice", "default")
    with pytest.raises(TunnelError, match=problem):
        tunnel.check_job({**GOOD, **change}, "alice", "default")


def test_the_ports_held_are_those_the_front_s_account_listens_on_at_loopback(tmp_path):
    table = tmp_path / "tcp"
    header = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
    rows = [
        "   0: 0100007F:7530 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 1 1",  # 30000
        "   1: 0100007F:7531 00000000:0000 0A 00000000:00000000 00:00000000 00000000  2002        0 2 1",  # bob's
        "   2: 00000000:7532 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 3 1",  # any addr
        "   3: 0100007F:7533 0100007F:1234 01 00000000:00000000 00:00000000 00000000   999        0 4 1",  # not LISTEN
        "   4: 0100007F:7534 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 5 1",  # 30004
        "   5: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000   999        0 6 1",  # 8080
    ]
    table.write_text(header + "\n".join(rows) + "\n")
    assert tunnel.held_ports(999, 30000, 30999, str(table)) == {30000, 30004}


@pytest.fixture
def tunnels(tmp_path, monkeypatch):
    """Tunnels in a scratch directory, the front being this process's own account, and the units it starts."""
    me = pwd.getpwuid(os.getuid())
    units = []
    monkeypatch.setattr(tunnel, "held_ports", lambda uid, low, high: {30001, 30002} if uid == me.pw_uid else set())
    settings = TunnelSettings((30000, 30009), me.pw_name)
    made = Tunnels(settings, str(tmp_path / "tunnels"), str(tmp_path / "units"), run=lambda *cmd: units.append(cmd))
    made.units = units
    return made


def test_open_takes_a_held_port_for_the_server_and_starts_its_unit(tunnels, tmp_path):
    me = pwd.getpwuid(os.getuid())
    port = tunnels.open(me.pw_name, "default", 12, SOCKET)
    assert port == 30001
    directory = tmp_path / "tunnels" / "30001"
    assert stat.S_IMODE(directory.stat().st_mode) == 0o2710, "the user's; the front's group may only pass through"
    settings = tunnel.read_unit_settings((tmp_path / "units" / f"{me.pw_name}:default.env").read_text())
    assert settings["TUNNEL_JOB"] == "12.0" and settings["TUNNEL_SOCKET"] == SOCKET
    assert settings["TUNNEL_END"] == str(directory / "end.sock") and settings["TUNNEL_UID"] == str(me.pw_uid)
    assert stat.S_IMODE((tmp_path / "units" / f"{me.pw_name}:default.env").stat().st_mode) == 0o600
    assert tunnels.units[-1] == ("systemctl", "start", "--no-block", f"condorlab-tunnel@{me.pw_name}:default.service")
    assert tunnels.open(me.pw_name, "named-b", 13, SOCKET) == 30002, "another server, another port"
    assert tunnels.port_of(me.pw_name, "default") == 30001


def test_a_server_has_one_tunnel_and_close_gives_its_port_back(tunnels, tmp_path):
    me = pwd.getpwuid(os.getuid())
    assert tunnels.open(me.pw_name, "default", 12, SOCKET) == 30001
    assert tunnels.open(me.pw_name, "default", 14, SOCKET) == 30001, "the older tunnel of the server went first"
    assert tunnels.close(me.pw_name, "default") == 30001
    assert not (tmp_path / "tunnels" / "30001").exists()
    assert tunnels.units[-1] == ("systemctl", "stop", f"condorlab-tunnel@{me.pw_name}:default.service")
    assert tunnels.close(me.pw_name, "default") is None, "closing twice is harmless"


def test_open_refuses_when_the_front_holds_no_free_port(tunnels):
    me = pwd.getpwuid(os.getuid())
    tunnels.open(me.pw_name, "named-a", 1, SOCKET)
    tunnels.open(me.pw_name, "named-b", 2, SOCKET)
    with pytest.raises(TunnelError, match="no free tunnel port"):
        tunnels.open(me.pw_name, "named-c", 3, SOCKET)


def test_the_front_holds_its_ports_and_passes_a_connection_to_its_tunnel_s_end(tmp_path):
    async def scenario():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        front = tunnelfront.Front(str(tmp_path), patience=2)
        servers = await front.listen(port, port)
        assert len(servers) == 1
        squatter = socket.socket()
        with pytest.raises(OSError):
            squatter.bind(("127.0.0.1", port))  # held: nobody else takes it
        squatter.close()
        (tmp_path / str(port)).mkdir()

        async def echo(reader, writer):
            writer.write(b"lab:" + await reader.read(100))
            await writer.drain()
            writer.close()

        # The end appears after the connection came: it waits for it.
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello")
        await writer.drain()
        await asyncio.sleep(0.3)
        end = await asyncio.start_unix_server(echo, str(tmp_path / str(port) / "end.sock"))
        answer = await asyncio.wait_for(reader.read(100), 5)
        writer.close()
        end.close()
        for server in servers:
            server.close()
        return answer

    assert asyncio.run(scenario()) == b"lab:hello"


def test_the_front_sends_without_waiting_for_acks(tmp_path, monkeypatch):
    """TCP_NODELAY on every connection it accepts: the small TLS records of a kernel's reply go at once."""
    seen = []

    async def spliced(a, b):
        seen.append(a[1].get_extra_info("socket").getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
        for _, writer in (a, b):
            writer.close()

    monkeypatch.setattr(tunnelfront, "splice", spliced)

    async def scenario():
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        probe.close()
        servers = await tunnelfront.Front(str(tmp_path), patience=2).listen(port, port)
        (tmp_path / str(port)).mkdir()
        end = await asyncio.start_unix_server(lambda r, w: w.close(), str(tmp_path / str(port) / "end.sock"))
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.wait_for(reader.read(), 5)
        writer.close()
        end.close()
        for server in servers:
            server.close()

    asyncio.run(scenario())
    assert seen and all(seen), f"TCP_NODELAY on the front's side of each connection: {seen}"


def test_the_front_closes_a_connection_to_a_port_without_a_tunnel(tmp_path):
    async def scenario():
        front = tunnelfront.Front(str(tmp_path), patience=0.5)
        servers = await front.listen(0, -1)  # nothing to hold: the handler alone
        assert servers == []
        served = front.handler(30005)
        reader, writer = await asyncio.open_connection(*await _pair(served))
        data = await asyncio.wait_for(reader.read(10), 5)
        writer.close()
        return data

    assert asyncio.run(scenario()) == b""


async def _pair(handler):
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    return server.sockets[0].getsockname()[:2]


def test_through_a_tunnel_a_connection_closed_at_once_is_the_lab_refusing_and_silence_a_lost_node():
    import ssl

    from condorlab.lablink import TunnelTransport
    from condorlab.policy import LabWatch

    for closed in (ConnectionResetError(), ssl.SSLEOFError(), asyncio.IncompleteReadError(b"", 10)):
        assert isinstance(TunnelTransport().seen(closed), ConnectionRefusedError)
    assert isinstance(TunnelTransport().seen(TimeoutError()), TimeoutError), "silence is no refusal"
    watch = LabWatch(lost_after=12, exit_grace=8)
    assert watch.judge(TunnelTransport().seen(TimeoutError()), now=100) is None
    assert watch.judge(TunnelTransport().seen(TimeoutError()), now=112) == "node-lost"
    watch.reset()
    assert watch.judge(TunnelTransport().seen(EOFError()), now=100) is None
    assert watch.judge(TunnelTransport().seen(EOFError()), now=108) == "lab-died"


def test_the_front_passes_connections_to_sockets_only_never_through_a_link(tmp_path):
    (tmp_path / "other").mkdir()
    target = tmp_path / "other" / "end.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(target))
    server.listen()
    link = tmp_path / "end.sock"
    link.symlink_to(target)
    with pytest.raises(PermissionError, match="not a socket"):
        asyncio.run(tunnelfront.open_end(str(link), 0.5))
    assert asyncio.run(_open(str(target))), "the socket itself is opened"
    server.close()


async def _open(path) -> bool:
    _, writer = await tunnelfront.open_end(path, 0.5)
    writer.close()
    return True


def test_given_its_port_open_keeps_a_running_tunnel_or_opens_it_there_again(tunnels, tmp_path):
    me = pwd.getpwuid(os.getuid())
    assert tunnels.open(me.pw_name, "default", 12, SOCKET) == 30001
    started = len(tunnels.units)
    assert tunnels.open(me.pw_name, "default", 12, SOCKET, prefer=30001) == 30001
    assert ("systemctl", "stop", f"condorlab-tunnel@{me.pw_name}:default.service") not in tunnels.units[started:]
    # The access point restarted: /run is empty; the server's port is taken again.
    for item in (tmp_path / "tunnels").iterdir():
        item.rmdir()
    for item in (tmp_path / "units").iterdir():
        item.unlink()
    assert tunnels.open(me.pw_name, "default", 12, SOCKET, prefer=30002) == 30002


def test_when_the_tunnel_s_end_closes_the_front_closes_the_client_s_connection_too(tmp_path):
    """No half-open connection: a client waiting for a TLS answer learns at once that none comes."""

    async def scenario():
        front = tunnelfront.Front(str(tmp_path), patience=2)
        (tmp_path / "30001").mkdir()

        async def refuse(reader, writer):
            writer.close()  # the lab's socket refused the tunnel's channel

        end = await asyncio.start_unix_server(refuse, str(tmp_path / "30001" / "end.sock"))
        server = await asyncio.start_server(front.handler(30001), "127.0.0.1", 0)
        reader, writer = await asyncio.open_connection(*server.sockets[0].getsockname()[:2])
        writer.write(b"client hello")  # and the client keeps its side open
        await writer.drain()
        data = await asyncio.wait_for(reader.read(10), 5)
        # Closed, not half-closed: what the client still sends is refused.
        refused = False
        for _ in range(20):
            try:
                writer.write(b"more")
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                refused = True
                break
            await asyncio.sleep(0.05)
        writer.close()
        server.close()
        end.close()
        return data, refused

    assert asyncio.run(scenario()) == (b"", True)
