#!/usr/bin/env python3
"""An auto-id v2 client written from autoidd(8), "The v2 wire format", with Python's
cryptography package (Debian: python3-cryptography), independently of keysock's code.

    v2_client.py fetch HOST:PORT ENTROPY PUBLIC_PEM SECRET_ID
        fetch the secret; print it (raw bytes) and exit 0, or print the refusal and exit 1
    v2_client.py vectors
        print, as JSON, the man page's values for fixed inputs (see vectors())
"""
import base64
import hashlib
import hmac
import http.client
import json
import os
import struct
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def u64(n):
    return struct.pack(">Q", n)


def proof(nonce, secret_id, snippets):
    m = b"autoid-v2 proof\x00" + u64(len(secret_id)) + secret_id
    for s in snippets:
        m += u64(len(s)) + s
    return hmac.new(nonce, m, hashlib.sha256).digest()


def hkdf(nonce, ikm, label):
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=nonce, info=label).derive(ikm)


def keys(nonce, k, shared):
    ikm = k + shared
    return hkdf(nonce, ikm, b"autoid-v2 request key"), hkdf(nonce, ikm, b"autoid-v2 response key")


def request_aad(nonce, server_share, client_share):
    return b"autoid-v2 request" + nonce + server_share + client_share


def response_aad(nonce):
    return b"autoid-v2 response" + nonce


def seal(key, iv, aad, plain):
    return iv + AESGCM(key).encrypt(iv, plain, aad)


def open_box(key, aad, box):
    return AESGCM(key).decrypt(box[:12], box[12:], aad)


def snippets(entropy, ranges):
    out = []
    for r in ranges.split("|"):
        lo, hi = (int(x) for x in r.split("-"))
        assert 0 <= lo < hi <= len(entropy), f"range {r} outside the file"
        out.append(entropy[lo:hi])
    return out


def post(conn, path, body):
    conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = conn.getresponse()
    return r.status, r.read()


def fetch(addr, entropy_path, public_pem, secret_id):
    with open(entropy_path, "rb") as f:
        entropy = f.read()
    with open(public_pem, "rb") as f:
        pub = serialization.load_pem_public_key(f.read())
    host, port = addr.rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    status, body = post(conn, "/v2/challenge", {})
    if status != 200:
        print(f"challenge: {status} {body!r}")
        return 1
    ch = json.loads(body)
    assert ch["version"] == 2, ch
    nonce = bytes.fromhex(ch["nonce"])
    assert len(nonce) == 32, ch
    server_share = bytes.fromhex(ch["server_share"])
    sid = secret_id.encode()
    p = proof(nonce, sid, snippets(entropy, ch["ranges"]))
    k = os.urandom(32)
    mine = x25519.X25519PrivateKey.generate()
    client_share = mine.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    shared = mine.exchange(x25519.X25519PublicKey.from_public_bytes(server_share))
    k_req, k_resp = keys(nonce, k, shared)
    inner = json.dumps({"secret_id": secret_id, "proof": p.hex()}).encode()
    box = seal(k_req, os.urandom(12), request_aad(nonce, server_share, client_share), inner)
    wrapped = pub.encrypt(
        k,
        padding.OAEP(mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None),
    )
    status, body = post(
        conn,
        "/v2/verify",
        {
            "nonce": ch["nonce"],
            "key": base64.b64encode(wrapped).decode(),
            "client_share": client_share.hex(),
            "box": base64.b64encode(box).decode(),
        },
    )
    if status != 200:
        print(f"verify: {status} {body!r}")
        return 1
    answer = base64.b64decode(json.loads(body)["box"])
    sys.stdout.buffer.write(open_box(k_resp, response_aad(nonce), answer))
    return 0


def vectors():
    """Fixed inputs: the file is bytes i*7 mod 256 for i < 4096, the nonce bytes 0..31, the
    ranges 0-10|100-2000|4000-4096, the id "aws-deploy", K = 0x11 * 32, shared = 0x22 * 32,
    the request IV 0x33 * 12, the answer IV 0x44 * 12, the secret "s3crét"."""
    entropy = bytes(i * 7 % 256 for i in range(4096))
    nonce = bytes(range(32))
    ranges = "0-10|100-2000|4000-4096"
    server_share, client_share = b"\x55" * 32, b"\x66" * 32
    k_req, k_resp = keys(nonce, b"\x11" * 32, b"\x22" * 32)
    p = proof(nonce, b"aws-deploy", snippets(entropy, ranges))
    inner = json.dumps({"secret_id": "aws-deploy", "proof": p.hex()}).encode()
    print(
        json.dumps(
            {
                "proof": p.hex(),
                "k_req": k_req.hex(),
                "k_resp": k_resp.hex(),
                "request_box": seal(
                    k_req, b"\x33" * 12, request_aad(nonce, server_share, client_share), inner
                ).hex(),
                "answer_box": seal(k_resp, b"\x44" * 12, response_aad(nonce), "s3crét".encode()).hex(),
            }
        )
    )
    return 0


def main():
    if sys.argv[1:2] == ["fetch"] and len(sys.argv) == 6:
        return fetch(*sys.argv[2:])
    if sys.argv[1:] == ["vectors"]:
        return vectors()
    print(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main())
