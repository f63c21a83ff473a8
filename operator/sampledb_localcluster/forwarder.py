"""Carry TCP connections made inside the real node's network namespace to the API server on the host.

The API server listens on the host's 127.0.0.1 only, which nothing inside the node's namespace can
reach. This process opens its listening sockets *inside* the namespace (a socket keeps the
namespace it was created in), then returns to the host's namespace, so each accepted connection
is relayed to the host's loopback. It listens on the namespace's 127.0.0.1 (the kubelet, kube-proxy
and CoreDNS use the same URL as every client on the host) and on the node's address (what the
``kubernetes`` Service's endpoint points at, for Pods). TLS passes through untouched: the API
server authenticates every client itself.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import os
import signal
import socket
from collections.abc import Sequence

_CLONE_NEWNET = 0x40000000


def _setns(fd: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, _CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


def listen_in(netns: str, addresses: Sequence[tuple[str, int]]) -> list[socket.socket]:
    """Bind listening sockets inside the namespace file ``netns``; the calling thread ends up back home."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(netns, os.O_RDONLY)
    try:
        _setns(target)
        sockets = []
        try:
            for host, port in addresses:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((host, port))
                sock.listen(128)
                sock.setblocking(False)
                sockets.append(sock)
        finally:
            _setns(home)
    finally:
        os.close(home)
        os.close(target)
    return sockets


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(ConnectionError, OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    with contextlib.suppress(ConnectionError, OSError):
        writer.close()


async def _relay(target: tuple[str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        upstream_reader, upstream_writer = await asyncio.open_connection(*target)
    except OSError:
        writer.close()
        return
    await asyncio.gather(_pipe(reader, upstream_writer), _pipe(upstream_reader, writer))


async def serve(sockets: Sequence[socket.socket], target: tuple[str, int]) -> None:
    """Relay every connection accepted on ``sockets`` to ``target`` until SIGTERM."""
    servers = [await asyncio.start_server(lambda r, w: _relay(target, r, w), sock=sock) for sock in sockets]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


def _address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host, int(port)


def main(argv: Sequence[str] | None = None) -> int:
    """Run as a cluster component (see :mod:`sampledb_localcluster.node`)."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--netns", required=True, help="the namespace's file, e.g. /run/netns/sampledb-0")
    parser.add_argument("--listen", action="append", type=_address, required=True, help="host:port inside it")
    parser.add_argument("--to", type=_address, required=True, help="host:port on the host, e.g. 127.0.0.1:6443")
    # Unused here: it puts the cluster's state folder on the command line, by which the harness
    # recognises its own processes (and never a stranger that reused a stale pid).
    parser.add_argument("--cluster", help="the state folder of the cluster this belongs to")
    args = parser.parse_args(argv)
    sockets = listen_in(args.netns, args.listen)
    asyncio.run(serve(sockets, args.to))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
