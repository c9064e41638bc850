#!/usr/bin/env python3
"""A stand-in for the original remo_serv 0.6.0 client (client/client.py), written from
specs/remo_serv.md §1.5, §2 and §4.2 (the original is on no package registry): urllib with a
cookie jar, every request a POST on a new connection (Connection: close), the key loaded
with the hard-coded password "foo", bodies as one BE token with Content-Length, uploads
chunked in 8192-byte blocks joined by CRLF without a trailing CRLF, responses decoded only
when they carry no Content-Length, line by line with TTL 10, undecodable lines passed through
as plain text (as the original does).

usage: spec_client.py PORT SERVER_PEM USER KEY_PEM WORKDIR
Prints one JSON line per step: [name, status, output-or-length]."""
import base64, hashlib, http.cookiejar, json, os, struct, sys, urllib.error, urllib.request

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import x448
from cryptography.hazmat.primitives.kdf.concatkdf import ConcatKDFHash

port, server_pem, user, key_pem, work = sys.argv[1:6]
base = "http://127.0.0.1:%s" % port
jar = http.cookiejar.CookieJar()
opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
with open(key_pem, "rb") as f:
    key = serialization.load_pem_private_key(f.read(), password=b"foo")
with open(server_pem, "rb") as f:
    server = serialization.load_pem_public_key(f.read())

state = {"req": 0, "fernet": None}


def open_(path, data, headers=None):
    h = {"Connection": "close", "Content-Type": "application/x-www-form-urlencoded"}
    h.update(headers or {})
    return opener.open(urllib.request.Request(base + path, data=data, headers=h, method="POST"))


def login():
    priv = x448.X448PrivateKey.generate()
    pub = priv.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    sign = key.sign(user.encode() + pub)
    body = json.dumps({"user": user, "key": base64.urlsafe_b64encode(pub).decode(),
                       "sign": base64.urlsafe_b64encode(sign).decode()}).encode()
    data = open_("/auth", body).read()
    spub = base64.urlsafe_b64decode(data[:76])
    server.verify(base64.urlsafe_b64decode(data[78:]), spub)
    z = priv.exchange(x448.X448PublicKey.from_public_bytes(spub))
    k = ConcatKDFHash(algorithm=hashes.SHA256(), length=32, otherinfo=b"remo_serv").derive(z)
    state["fernet"] = Fernet(base64.urlsafe_b64encode(k))
    state["req"] = 0


def request(prefix, arg=None, payload=b"", upload=None):
    f = state["fernet"]
    state["req"] += 1
    req = state["req"]
    path = prefix + (f.encrypt(arg.encode()).decode() if arg is not None else "")
    digest = hashlib.sha384(path.encode()).digest()
    if upload is None:
        body = f.encrypt(b"BE" + struct.pack(">hh", req, 0) + digest + payload)
    else:
        def chunks():
            with open(upload, "rb") as fh:
                blocks = iter(lambda: fh.read(8192), b"")
                first = next(blocks, None)
                if first is None:
                    yield f.encrypt(b"BE" + struct.pack(">hh", req, 0) + digest)
                    return
                yield f.encrypt(b"B." + struct.pack(">hh", req, 0) + digest + first)
                tok = 1
                for b in blocks:
                    yield b"\r\n" + f.encrypt(b".." + struct.pack(">hh", req, tok) + b)
                    tok += 1
                yield b"\r\n" + f.encrypt(b".E" + struct.pack(">hh", req, tok))
        body = chunks()
    try:
        resp = open_(path, body)
        status = resp.status
    except urllib.error.HTTPError as e:
        return e.code, b""
    if resp.headers.get("Content-Length") is not None:
        return status, resp.read()
    out, tok = b"", 0
    while True:
        line = resp.readline()
        if not line:
            break
        try:
            p = f.decrypt(line, ttl=10)
        except InvalidToken:
            out += line  # the original passes undecodable lines through
            continue
        r, t = struct.unpack(">hh", p[2:6])
        if tok == 0:
            if p[0:1] != b"B" or t != 0 or r != req or p[6:9] != (b"%03d" % status):
                out += line
                continue
            out += p[9:]
        else:
            if p[0:1] == b"B" or t != tok or r != req:
                out += line
                continue
            out += p[6:]
        tok += 1
    return status, out


def emit(name, status, out):
    print(json.dumps([name, status, out.decode("latin-1")]), flush=True)


login()
emit("exec", *request("/cmd/", "echo hi there"))
big = os.path.join(work, "local.bin")
st, data = request("/get/", big)
with open(os.path.join(work, "fetched.bin"), "wb") as fh:
    fh.write(data)
emit("get", st, str(len(data)).encode())
st, data = request("/put/", os.path.join(work, "put.bin"), upload=big)
emit("put", st, data)
emit("exec-status", *request("/cmd/", "sh -c 'echo out; exit 3'"))
emit("iexec", *request("/icm/", "cat"))
emit("idata", *request("/idt", payload=b"hello\n"))
emit("iend", *request("/edt"))
emit("missing", *request("/get/", os.path.join(work, "nonexistent")))
emit("info", *request("/info"))
