"""The hub's wire format, for the scripts that speak it directly: a u32
big-endian frame length, then a transport message (BARE: version 1, onward
route, return route, payload)."""
import struct


def uint(v):
    """A BARE uint (LEB128)."""
    out = bytearray()
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)
    return bytes(out)


def string(s):
    """A BARE string or data: its length, then its bytes."""
    b = s.encode() if isinstance(s, str) else s
    return uint(len(b)) + b


def local(name):
    """A local address (transport type 0)."""
    return bytes([0]) + string(name)


def route(addresses):
    return uint(len(addresses)) + b"".join(addresses)


def frame(onward, back, payload):
    """A framed transport message: routes are lists of encoded addresses."""
    body = bytes([1]) + route(onward) + route(back) + string(payload)
    return struct.pack(">I", len(body)) + body


def rss_mib(pid):
    """A process's resident memory, in MiB."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
