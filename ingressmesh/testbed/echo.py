"""A task's workload in the testbed: TCP and UDP servers that answer with the task's name.

TCP: on connect, send "<name>\\n"; then answer every line with "<name> <line>" ("peer?" is
answered with "<name> peer <the caller's address as this task sees it>"; "bye" is answered,
then the server closes first, as an HTTP server does after a response).  UDP: answer
every datagram with "<name> <datagram>" ("peer?" as for TCP).  Prints "ready" once listening, so the testbed can wait.
"""
from __future__ import annotations

import argparse
import asyncio
import sys


class _Udp(asyncio.DatagramProtocol):
    def __init__(self, name: str):
        self.name = name.encode()

    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        if data.strip() == b"peer?":  # who called, as for TCP
            data = b"peer " + addr[0].encode()
        self.transport.sendto(self.name + b" " + data, addr)


async def _serve(name: str, tcp_ports: list[int], udp_ports: list[int]) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(f"{name}\n".encode())
            await writer.drain()
            while line := await reader.readline():
                if line.strip() == b"peer?":  # who called: the address this task sees
                    line = f"peer {writer.get_extra_info('peername')[0]}\n".encode()
                writer.write(f"{name} ".encode() + line)
                await writer.drain()
                if line.strip() == b"bye":  # the server closes first, as an HTTP server does
                    break
        except ConnectionError:
            pass
        finally:
            writer.close()

    loop = asyncio.get_running_loop()
    for port in tcp_ports:
        await asyncio.start_server(handle, "0.0.0.0", port)
    for port in udp_ports:
        await loop.create_datagram_endpoint(lambda: _Udp(name), local_addr=("0.0.0.0", port))
    print("ready", flush=True)
    await asyncio.Event().wait()  # start_server already serves; run until killed


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--name", required=True)
    parser.add_argument("--tcp", type=int, action="append", default=[])
    parser.add_argument("--udp", type=int, action="append", default=[])
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve(args.name, args.tcp, args.udp))
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
