#!/usr/bin/env python3
"""Mints JWTs for the Envoy end-to-end tests with Python's `cryptography`, an implementation
(OpenSSL) other than the ones that check them (BoringSSL inside Envoy for RS* and ES*, ring in
the filter for the rest), so the tests prove interoperability rather than agreement of one
library with itself.

Keys are generated afresh on every run and tokens signed on the spot: nothing is stored, so
nothing expires between runs.

Reads one JSON request on stdin:

    {"keys":   [{"id": "rsa", "kty": "RSA", "kid": "rsa-1"},     # RSA-2048
                {"id": "ec",  "kty": "EC",  "kid": "ec-1", "alg": "ES256"},    # P-256
                {"id": "ec384", "kty": "EC", "crv": "P-384", "kid": "ec-2"}],
     "tokens": [{"id": "valid", "key": "rsa", "alg": "RS256", "claims": {...}},
                {"id": "other-kid", "key": "rsa", "alg": "RS256", "header": {"kid": "x"},
                 "claims": {...}},
                {"id": "tampered", "key": "ec", "alg": "ES256", "claims": {...},
                 "tamper": true},
                {"id": "unsigned", "alg": "none", "claims": {...}}]}

and writes one JSON answer on stdout:

    {"keys":   {"rsa": <public JWK>, "ec": <public JWK>},
     "jwks":   {"keys": [<every public JWK>]},
     "tokens": {"valid": "eyJ...", ...}}

Algorithms: RS256/384/512 and PS256/384/512 (RSA keys), ES256 (P-256 keys, the default
`crv`), ES384 (P-384 keys), and `none`
(no key; empty signature). A token's protected header is {"alg", "typ": "JWT", "kid": the
key's kid} updated with its "header" entries (a null value removes an entry). "tamper"
flips one bit of the signature. Only `demo_services::jwt_minter` runs this (for the Envoy
end-to-end tests and `make bench`); it is not a tool for production tokens.
"""

import base64
import json
import sys

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

HASHES = {"256": hashes.SHA256, "384": hashes.SHA384, "512": hashes.SHA512}
# JWK crv -> (curve, coordinate and r/s size in bytes).
CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48)}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def int_bytes(value: int, length: int = 0) -> bytes:
    length = length or max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(length, "big")


def compact_json(value) -> bytes:
    return json.dumps(value, separators=(",", ":"), sort_keys=True).encode("utf-8")


def generate(spec):
    kty = spec["kty"]
    if kty == "RSA":
        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        numbers = private.public_key().public_numbers()
        public = {"kty": "RSA", "n": b64url(int_bytes(numbers.n)), "e": b64url(int_bytes(numbers.e))}
    elif kty == "EC":
        crv = spec.get("crv", "P-256")
        if crv not in CURVES:
            raise SystemExit(f"mint_jwt.py: key {spec['id']!r}: crv must be P-256 or P-384, not {crv!r}")
        curve, size = CURVES[crv]
        private = ec.generate_private_key(curve())
        numbers = private.public_key().public_numbers()
        public = {
            "kty": "EC",
            "crv": crv,
            "x": b64url(int_bytes(numbers.x, size)),
            "y": b64url(int_bytes(numbers.y, size)),
        }
    else:
        raise SystemExit(f"mint_jwt.py: key {spec['id']!r}: kty must be RSA or EC, not {kty!r}")
    public["kid"] = spec["kid"]
    public["use"] = "sig"
    if "alg" in spec:
        public["alg"] = spec["alg"]
    return private, public


def sign(alg: str, private, signing_input: bytes) -> bytes:
    family, bits = alg[:2], alg[2:]
    if family in ("RS", "PS") and bits in HASHES and isinstance(private, rsa.RSAPrivateKey):
        digest = HASHES[bits]()
        if family == "RS":
            scheme = padding.PKCS1v15()
        else:
            # RFC 7518 section 3.5: MGF1 with the same hash, salt as long as the hash.
            scheme = padding.PSS(mgf=padding.MGF1(HASHES[bits]()), salt_length=digest.digest_size)
        return private.sign(signing_input, scheme, digest)
    if family == "ES" and isinstance(private, ec.EllipticCurvePrivateKey):
        crv = {"secp256r1": "P-256", "secp384r1": "P-384"}.get(private.curve.name)
        if (alg, crv) in (("ES256", "P-256"), ("ES384", "P-384")):
            # JWS wants r || s, each the curve's size, not the DER sequence `cryptography`
            # produces.
            size = CURVES[crv][1]
            r, s = decode_dss_signature(private.sign(signing_input, ec.ECDSA(HASHES[bits]())))
            return int_bytes(r, size) + int_bytes(s, size)
    raise SystemExit(f"mint_jwt.py: cannot sign {alg} with this key")


def mint(spec, keys) -> str:
    alg = spec["alg"]
    header = {"alg": alg, "typ": "JWT"}
    key = None
    if alg != "none":
        key = keys.get(spec.get("key"))
        if key is None:
            raise SystemExit(f"mint_jwt.py: token {spec['id']!r} names no known key")
        header["kid"] = key[1]["kid"]
    for name, value in spec.get("header", {}).items():
        if value is None:
            header.pop(name, None)
        else:
            header[name] = value
    signing_input = b64url(compact_json(header)).encode() + b"." + b64url(compact_json(spec["claims"])).encode()
    signature = b"" if key is None else sign(alg, key[0], signing_input)
    if spec.get("tamper"):
        if not signature:
            raise SystemExit(f"mint_jwt.py: token {spec['id']!r} has no signature to tamper with")
        signature = bytes([signature[0] ^ 0x01]) + signature[1:]
    return signing_input.decode() + "." + b64url(signature)


def main() -> None:
    request = json.load(sys.stdin)
    keys = {spec["id"]: generate(spec) for spec in request.get("keys", [])}
    answer = {
        "keys": {name: pair[1] for name, pair in keys.items()},
        "jwks": {"keys": [pair[1] for pair in keys.values()]},
        "tokens": {spec["id"]: mint(spec, keys) for spec in request.get("tokens", [])},
    }
    json.dump(answer, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
