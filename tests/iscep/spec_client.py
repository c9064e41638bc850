"""A Python iscep client that reads the way the original does (specs/iscep.md §2.2: one recv
of 4 bytes, then ONE recv of the rest, no loop) and connects the way it does over TLS (§2.9:
the certificate file as the only trust anchor, no host name check, no SNI). Written from the
spec, not from the original's code. It runs the scenario of §6.3 and prints one JSON line per
answer: [type, body].

usage: spec_client.py PORT TOKEN|- CERT|-
"""
import hashlib
import json
import socket
import ssl
import struct
import sys

ORDER = ["auth_token", "command", "args", "error", "response"]


def dump(ty, body):
    d = {k: body[k] for k in ORDER if body.get(k) is not None}
    b = json.dumps(d).encode()
    return struct.pack(">IH", 2 + len(b) + 32, ty) + b + hashlib.md5(b).hexdigest().encode()


def load(sock):
    head = sock.recv(4)
    if len(head) < 4:
        return None
    size = struct.unpack(">I", head)[0]
    if size == 0:
        return None
    data = sock.recv(size)  # one recv, as the original: the frame must arrive in one piece
    if len(data) != size:
        raise SystemExit("short read: %d of %d bytes" % (len(data), size))
    body = data[2:-32]
    if hashlib.md5(body).hexdigest() != data[-32:].decode():
        raise SystemExit("bad checksum")
    return [struct.unpack(">H", data[:2])[0], json.loads(body)]


def main():
    port, token, cert = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    token = None if token == "-" else token
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if cert != "-":
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(cert)
        ctx.check_hostname = False
        sock = ctx.wrap_socket(sock)  # no server_hostname: no SNI

    def ask(ty, body, use_auth=True):
        b = dict(body)
        if use_auth and token:
            b["auth_token"] = token
        sock.sendall(dump(ty, b))
        print(json.dumps(load(sock)), flush=True)

    ask(0, {"response": {"echo": "echo"}})
    ask(1, {})
    ask(2, {"command": "test_task", "args": {"message": "hello", "numb": 1}})
    ask(2, {"command": "non_existing_task"})
    ask(2, {"command": "test_task", "args": {"message": "hello", "numb": 1}}, use_auth=False)
    # 15 000 characters: with a 512-character token the answer still fits one TLS record
    # (16 KiB), the largest frame the original moves over TLS.
    ask(0, {"response": {"echo": "x" * 15000}})
    if cert == "-":
        # Plain TCP: 40 000 characters (over the kernel's initial 16 KiB send buffer, which
        # iscepd enlarges), read with one recv as well.
        ask(0, {"response": {"echo": "y" * 40000}})
    sock.sendall(dump(4, {"auth_token": token} if token else {}))
    print(json.dumps(load(sock)), flush=True)


main()
