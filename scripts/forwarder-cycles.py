#!/usr/bin/env python3
"""Connect, register a forwarder, close, N times, against a running hub, and
print the hub's resident memory as it goes (issue 18's failing input).

Usage: scripts/forwarder-cycles.py PORT HUB_PID N [SERVICE]
  SERVICE: forwarding_service (default), or e.g. echo_service for a baseline
  without forwarders. Speaks the wire format directly: a u32 big-endian
  frame length, then a transport message (version 1, onward route
  [SERVICE], return route ["client"], payload: the BARE string "dest").
"""
import socket
import sys
import time

from hubwire import frame as hub_frame, local, rss_mib, string


def frame(service):
    return hub_frame([local(service)], [local("client")], string("dest"))


def main():
    port, pid, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
    service = sys.argv[4] if len(sys.argv) > 4 else "forwarding_service"
    f = frame(service)
    print(f"start: hub RSS {rss_mib(pid):.1f} MiB", flush=True)
    for i in range(n):
        with socket.create_connection(("127.0.0.1", port)) as s:
            s.sendall(f)
            s.settimeout(10)
            if not s.recv(4096):
                sys.exit(f"cycle {i}: the hub closed without answering")
        if (i + 1) % 1000 == 0:
            print(f"{i + 1} cycles: hub RSS {rss_mib(pid):.1f} MiB", flush=True)
    for waited in (5, 10, 15):
        time.sleep(5)
        print(f"+{waited} s idle: hub RSS {rss_mib(pid):.1f} MiB", flush=True)


if __name__ == "__main__":
    main()
