"""Message authentication codes for terminals (specs/HOST-INTERFACE.md §9, field 64/128).

Two algorithms, named as in configuration and the CLI:

- ``cmac-aes``: AES-CMAC (NIST SP 800-38B) with a 16-byte AES-128 key,
  truncated to the first 8 bytes.
- ``x919``: ISO 9797-1 MAC algorithm 3, the ANSI X9.19 retail MAC, with a
  double-length DES key ``KL || KR``: single-DES CBC-MAC under ``KL`` over the
  data zero-padded to a multiple of 8 (ISO 9797-1 padding method 1; empty data
  is one block of zeros), then the last block is decrypted under ``KR`` and
  encrypted again under ``KL``.

Both return 8 bytes. Keys never appear in exception messages.

>>> key = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
>>> compute("x919", key, b"Now is the time for all ").hex().upper()
'A1C72E74EA3FA9B6'
>>> verify("x919", key, b"Now is the time for all ", bytes.fromhex("A1C72E74EA3FA9B6"))
True
"""

from __future__ import annotations

import hmac
from functools import lru_cache

from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES

try:
    # cryptography >= 43 keeps DES in the "decrepit" namespace; importing it from
    # there avoids a deprecation warning (which pytest may turn into an error).
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography 42
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

ALGORITHMS = ("cmac-aes", "x919")

MAC_LEN_BYTES = 8
_KEY_LEN_BYTES = {"cmac-aes": 16, "x919": 16}
_DES_BLOCK_BYTES = 8
_ZERO_BLOCK = bytes(_DES_BLOCK_BYTES)

# Cached per key so that the key schedule is paid once per terminal, not per
# message. Bounded: a switch with more live keys than this just recomputes.
_CACHE_KEYS_MAX = 4096


def key_length_ok(alg: str, key: bytes) -> bool:
    """True when ``key`` has the length ``alg`` needs (False for an unknown ``alg``).

    >>> key_length_ok("cmac-aes", bytes(16)), key_length_ok("x919", bytes(8))
    (True, False)
    """
    expected = _KEY_LEN_BYTES.get(alg)
    return expected is not None and len(key) == expected


def _check(alg: str, key: bytes) -> None:
    expected = _KEY_LEN_BYTES.get(alg)
    if expected is None:
        raise ValueError(f"unknown MAC algorithm {alg!r}; known: {', '.join(ALGORITHMS)}")
    if len(key) != expected:
        raise ValueError(f"{alg}: key must be {expected} bytes, got {len(key)}")


@lru_cache(maxsize=_CACHE_KEYS_MAX)
def _cmac_base(key: bytes) -> cmac.CMAC:
    # A fresh CMAC with the key schedule done; callers copy() it per message.
    return cmac.CMAC(AES(key))


def _cmac_aes_full(key: bytes, data: bytes) -> bytes:
    """The full 16-byte AES-CMAC tag (for tests against NIST SP 800-38B)."""
    ctx = _cmac_base(key).copy()
    ctx.update(data)
    return ctx.finalize()


@lru_cache(maxsize=_CACHE_KEYS_MAX)
def _des_ciphers(key: bytes) -> tuple[Cipher[modes.CBC], Cipher[modes.ECB], Cipher[modes.ECB]]:
    # Single DES expressed as 3DES with K1 = K2 = K3 (EDE collapses to E).
    kl, kr = key[:_DES_BLOCK_BYTES], key[_DES_BLOCK_BYTES:]
    cbc_kl = Cipher(TripleDES(kl * 3), modes.CBC(_ZERO_BLOCK))
    ecb_kl = Cipher(TripleDES(kl * 3), modes.ECB())
    ecb_kr = Cipher(TripleDES(kr * 3), modes.ECB())
    return cbc_kl, ecb_kl, ecb_kr


def _pad_method_1(data: bytes) -> bytes:
    """ISO 9797-1 padding method 1: zeros up to a block multiple; empty -> one zero block.

    >>> _pad_method_1(b"").hex(), _pad_method_1(b"A").hex(), len(_pad_method_1(bytes(8)))
    ('0000000000000000', '4100000000000000', 8)
    """
    if not data:
        return _ZERO_BLOCK
    remainder = len(data) % _DES_BLOCK_BYTES
    return data if remainder == 0 else data + bytes(_DES_BLOCK_BYTES - remainder)


def _x919(key: bytes, data: bytes) -> bytes:
    cbc_kl, ecb_kl, ecb_kr = _des_ciphers(key)
    # CBC encryption with a zero IV: the last ciphertext block is the CBC-MAC.
    last = cbc_kl.encryptor().update(_pad_method_1(data))[-_DES_BLOCK_BYTES:]
    middle = ecb_kr.decryptor().update(last)
    return ecb_kl.encryptor().update(middle)


def compute(alg: str, key: bytes, data: bytes) -> bytes:
    """Return the 8-byte MAC of ``data`` under ``key`` with ``alg``.

    Raises ValueError on an unknown algorithm or a key of the wrong length.

    >>> key = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
    >>> compute("cmac-aes", key, b"").hex()
    'bb1d6929e9593728'
    >>> compute("des", key, b"")
    Traceback (most recent call last):
    ...
    ValueError: unknown MAC algorithm 'des'; known: cmac-aes, x919
    """
    _check(alg, key)
    if alg == "cmac-aes":
        return _cmac_aes_full(key, data)[:MAC_LEN_BYTES]
    return _x919(key, data)


def verify(alg: str, key: bytes, data: bytes, mac: bytes) -> bool:
    """True when ``mac`` is the MAC of ``data``; compared in constant time.

    A ``mac`` of the wrong length is simply False; a bad ``alg`` or key raises
    ValueError as in :func:`compute` (that is configuration, not input).

    >>> key = bytes(16)
    >>> verify("cmac-aes", key, b"x", compute("cmac-aes", key, b"x")), verify("cmac-aes", key, b"x", bytes(8))
    (True, False)
    """
    expected = compute(alg, key, data)
    return hmac.compare_digest(expected, bytes(mac))
