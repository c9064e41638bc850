#!/usr/bin/env python3
"""The s5 v2 answer computed independently of keysock, from s5d(1), THE V2 ANSWER, with
Python's cryptography package (Debian: python3-cryptography):

    k_enc = HMAC-SHA256(pad, "keysock s5 v2 encryption")
    k_mac = HMAC-SHA256(pad, "keysock s5 v2 authentication")
    ct    = AES-256-CTR(key k_enc, counter block iv)(secret)
    tag   = HMAC-SHA256(k_mac, "s5v2" || iv || ct)
    body  = base64(iv || ct || tag), iv 16 bytes

where pad is the second half (bytes 48..96) of the 96-byte token.

    v2_kat.py seal TOKEN IV_HEX SECRET_HEX    print the body for this iv
    v2_kat.py check TOKEN SECRET_HEX < BODY   exit 0 if BODY (as served) is exactly the body
                                              for SECRET under BODY's own iv, else say why, exit 1
"""
import base64
import hashlib
import hmac
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes


def keys(token_b64):
    token = base64.b64decode(token_b64)
    assert len(token) == 96, "a token is 96 bytes"
    pad = token[48:]
    k_enc = hmac.new(pad, b"keysock s5 v2 encryption", hashlib.sha256).digest()
    k_mac = hmac.new(pad, b"keysock s5 v2 authentication", hashlib.sha256).digest()
    return k_enc, k_mac


def seal(token_b64, iv, secret):
    k_enc, k_mac = keys(token_b64)
    enc = Cipher(algorithms.AES(k_enc), modes.CTR(iv)).encryptor()
    ct = enc.update(secret) + enc.finalize()
    tag = hmac.new(k_mac, b"s5v2" + iv + ct, hashlib.sha256).digest()
    return base64.b64encode(iv + ct + tag).decode()


def main():
    cmd, token = sys.argv[1], sys.argv[2]
    if cmd == "seal":
        print(seal(token, bytes.fromhex(sys.argv[3]), bytes.fromhex(sys.argv[4])), end="")
        return 0
    if cmd == "check":
        secret = bytes.fromhex(sys.argv[3])
        body = sys.stdin.buffer.read().decode()
        raw = base64.b64decode(body, validate=True)
        if len(raw) != 16 + len(secret) + 32:
            print(f"answer is {len(raw)} bytes, want {16 + len(secret) + 32}")
            return 1
        want = seal(token, raw[:16], secret)
        if want != body:
            print(f"answer differs:\n got  {body}\n want {want}")
            return 1
        return 0
    print(__doc__)
    return 64


if __name__ == "__main__":
    sys.exit(main())
