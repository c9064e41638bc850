# A stand-in for auto-id's client/crypto_client.py, written from specs/auto-id.md (§1.5, §2)
# because the original is not installable from a package registry. It behaves as the spec
# describes the original: same command line, same files read from the current directory,
# same Mersenne-Twister passphrase and intervals, same encodings and padding on characters,
# same output (exit 0 even on failure). Needs pycryptodome and requests.
#
# Usage: python crypto_client.py <url> <credential_source>
import base64
import hashlib
import json
import random
import string
import sys

import requests
from Crypto import Random
from Crypto.Cipher import AES, PKCS1_OAEP
from Crypto.PublicKey import RSA

MAX_SNIPPETS = 4
MAX_SIZE = 2048

try:
    with open("info2048.bin", "r") as f:
        ENTROPY = f.read()
except Exception:
    print("Cannot read entropy file. Aborting.")
    sys.exit(1)

try:
    with open("public.pem", "r") as f:
        PUBLIC_KEY = RSA.importKey(f.read())
except Exception:
    print("Cannot read public key file. Aborting.")
    sys.exit(1)


def to_wire(raw):
    # standard base64, then lowercase hex of its ASCII characters
    return base64.b64encode(raw).hex()


def from_wire(text):
    return base64.b64decode(bytes.fromhex(text))


def pad(s):
    # PKCS#7-like, counted on characters (the original's quirk)
    n = AES.block_size - len(s) % AES.block_size
    return s + n * chr(n)


def unpad(b):
    return b[: -b[-1]]


def intervals():
    tuples = []
    for _ in range(MAX_SNIPPETS):
        while True:
            a = random.randint(0, MAX_SIZE - 1)
            b = random.randint(0, MAX_SIZE - 1)
            l = random.randint(0, MAX_SIZE - 1)
            if a != b:
                break
        tuples.append((a, b, l))
    return "|".join("%d,%d,%d" % t for t in tuples)


def hash_of(entropy, spec):
    acc = ""
    for t in spec.split("|"):
        a, b, l = (int(x) for x in t.split(","))
        acc += entropy[min(a, b) + MAX_SIZE * l : max(a, b) + MAX_SIZE * l]
    return hashlib.sha256(acc.encode("utf-8")).hexdigest()


def main():
    url, source = sys.argv[1], sys.argv[2]
    passphrase = "".join(random.choices(string.ascii_letters + string.digits, k=16))
    data = to_wire(PKCS1_OAEP.new(PUBLIC_KEY).encrypt(passphrase.encode("utf-8")))
    key = hashlib.sha256(passphrase.encode("utf-8")).digest()
    spec = intervals()
    inner = json.dumps(
        {"hashval": hash_of(ENTROPY, spec), "intervals": spec, "credential_source": source}
    )
    iv = Random.new().read(AES.block_size)
    ct = AES.new(key, AES.MODE_CBC, iv).encrypt(pad(inner).encode("utf-8"))
    body = json.dumps({"data": data, "payload": to_wire(iv + ct)})
    r = requests.post(url, data=body, headers={"content-type": "application/json"})
    if r.status_code == 201:
        raw = from_wire(json.loads(r.text)["message"])
        plain = AES.new(key, AES.MODE_CBC, raw[:16]).decrypt(raw[16:])
        print(unpad(plain).decode("utf-8"))
    else:
        print("An error occurred: %d %s" % (r.status_code, r.text))


if __name__ == "__main__":
    main()
