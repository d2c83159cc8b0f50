"""blake2b for agreement checks, without importing hashlib.

Importing hashlib loads OpenSSL's libcrypto (3.5 MB resident in every rank, measured here),
although its blake2b is CPython's own, built in as ``_blake2``.
"""

from __future__ import annotations

try:
    from _blake2 import blake2b
except ImportError:  # a Python built without it: hashlib then provides one
    from hashlib import blake2b


def digest(value: bytes, size: int) -> bytes:
    """The blake2b digest of ``value``, ``size`` bytes long."""
    return blake2b(value, digest_size=size).digest()
