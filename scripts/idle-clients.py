#!/usr/bin/env python3
"""Opens CLIENTS TCP connections to a running hub, each opening STREAMS
streams (stream_create, one stream worker each; CLIENTS x STREAMS streams
in all) and pushing one message into each, then leaves them idle and
prints the hub's resident memory (issue 17's memory figure: 10,000 idle
streams and 1,000 idle clients).

Usage: scripts/idle-clients.py PORT HUB_PID [CLIENTS] [STREAMS]
  (defaults 1000 and 10). Speaks the wire format directly: a u32
  big-endian frame length, then a transport message (version 1, onward
  route, return route, payload), as scripts/forwarder-cycles.py does.
"""
import socket
import struct
import sys
import time

from hubwire import frame, local, rss_mib, string, uint


def protocol_payload(protocol, data):
    return string(protocol) + string(data)


def read_frame(s):
    head = recv_exact(s, 4)
    return recv_exact(s, struct.unpack(">I", head)[0])


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            sys.exit("the hub closed a connection")
        buf += chunk
    return buf


def parse_return_route(body):
    """The return route of a transport message, as raw address bytes."""
    at = 1

    def read_uint():
        nonlocal at
        v, shift = 0, 0
        while True:
            b = body[at]
            at += 1
            v |= (b & 0x7F) << shift
            if b < 0x80:
                return v
            shift += 7

    def read_route():
        nonlocal at
        out = []
        for _ in range(read_uint()):
            start = at
            at += 1  # transport type
            n = read_uint()
            at += n
            out.append(body[start:at])
        return out

    read_route()
    return read_route()


def main():
    port, pid = int(sys.argv[1]), int(sys.argv[2])
    clients = int(sys.argv[3]) if len(sys.argv) > 3 else 1000
    streams = int(sys.argv[4]) if len(sys.argv) > 4 else 10
    print(f"start: hub RSS {rss_mib(pid):.1f} MiB", flush=True)
    socks = []
    for c in range(clients):
        s = socket.create_connection(("127.0.0.1", port))
        s.settimeout(30)
        for j in range(streams):
            name = f"idle-{c}-{j}"
            create = protocol_payload("stream_create", bytes([1]) + string(name))
            s.sendall(frame([local("stream")], [local("app")], create))
        workers = [parse_return_route(read_frame(s)) for _ in range(streams)]
        for j, worker in enumerate(workers):
            # PushRequest { request_id: uint, data: data }
            push = protocol_payload("stream_push", uint(0) + string(b"x" * 100))
            s.sendall(frame(worker, [local("app")], push))
        for _ in range(streams):
            read_frame(s)  # the confirmations
        socks.append(s)
        if (c + 1) % 100 == 0:
            print(f"{c + 1} clients, {(c + 1) * streams} streams: hub RSS {rss_mib(pid):.1f} MiB", flush=True)
    for waited in (5, 10):
        time.sleep(5)
        print(f"+{waited} s idle: hub RSS {rss_mib(pid):.1f} MiB", flush=True)
    for s in socks:
        s.close()


if __name__ == "__main__":
    main()
