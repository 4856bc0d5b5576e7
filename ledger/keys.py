"""Terminal keys at rest: sealed under a master key that never enters the database.

The switch unseals them (switch.terminals), the CLI and the portal seal them
(ledger.terminals); none of them prints or logs a key, only its check value (:func:`kcv`).

The master key (32 bytes, AES-256) comes from a file or an environment
variable as 64 hexadecimal characters. A terminal key is sealed with
AES-256-GCM; the ``aad`` binds the sealed blob to its owner (e.g. the terminal
id and algorithm) so that a blob copied onto another row fails to unseal.

Blob layout: ``0x01`` (version) || nonce (12 bytes) || ciphertext || tag (16 bytes).

>>> master = bytes.fromhex(generate_master_key_hex())
>>> blob = seal(master, bytes(16), b"terminal:T0000001")
>>> unseal(master, blob, b"terminal:T0000001") == bytes(16)
True
>>> unseal(master, blob, b"terminal:T0000002")
Traceback (most recent call last):
...
ledger.keys.KeyStoreError: keystore: cannot unseal: wrong master key, wrong owner (aad) or tampered blob
"""

from __future__ import annotations

import os
import secrets
import string
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import cmac
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from ledger.errors import SwitchdError

MASTER_KEY_BYTES = 32
_VERSION = b"\x01"
_NONCE_BYTES = 12
_TAG_BYTES = 16
_HEX_DIGITS = frozenset(string.hexdigits)


class KeyStoreError(SwitchdError):
    """A key store problem; ``str()`` is one line and never contains key material."""


def _parse_master_hex(text: str, source: str) -> bytes:
    # Whitespace anywhere is dropped: files end in newlines, people paste in groups.
    compact = "".join(text.split())
    if len(compact) != 2 * MASTER_KEY_BYTES:
        raise KeyStoreError(
            f"keystore: master key from {source}: expected {2 * MASTER_KEY_BYTES} hex characters, "
            f"got {len(compact)}"
        )
    if not set(compact) <= _HEX_DIGITS:
        raise KeyStoreError(f"keystore: master key from {source}: not hexadecimal")
    return bytes.fromhex(compact)


def load_master_key(
    master_key_file: str, master_key_env: str, env: Mapping[str, str] | None = None
) -> bytes | None:
    """Load the 32-byte master key, or None when none is configured.

    ``master_key_file`` wins when non-empty; otherwise the environment variable
    named ``master_key_env`` is used when set and non-empty. Errors name the
    source (file path or variable name), never the value.

    >>> load_master_key("", "SWITCHD_MASTER_KEY", env={}) is None
    True
    >>> len(load_master_key("", "MK", env={"MK": "00" * 32}))
    32
    >>> load_master_key("", "MK", env={"MK": "zz" * 32})
    Traceback (most recent call last):
    ...
    ledger.keys.KeyStoreError: keystore: master key from environment variable MK: not hexadecimal
    """
    if master_key_file:
        try:
            with open(master_key_file, encoding="ascii") as fh:
                text = fh.read()
        except OSError as exc:
            raise KeyStoreError(
                f"keystore: cannot read master key file {master_key_file}: {exc.strerror}"
            ) from None
        except UnicodeDecodeError:
            raise KeyStoreError(
                f"keystore: master key from file {master_key_file}: not hexadecimal"
            ) from None
        return _parse_master_hex(text, f"file {master_key_file}")
    environ = os.environ if env is None else env
    if master_key_env:
        value = environ.get(master_key_env, "")
        if value.strip():
            return _parse_master_hex(value, f"environment variable {master_key_env}")
    return None


def load_previous_master_key(path: str) -> bytes | None:
    """The previous master key during a rotation (``[security] master_key_previous_file``): None when
    no file is configured or the configured file does not exist (no rotation under way)."""
    if not path or not os.path.exists(path):
        return None
    return load_master_key(path, "")


def _check_master(master_key: bytes) -> AESGCM:
    if len(master_key) != MASTER_KEY_BYTES:
        raise KeyStoreError(
            f"keystore: master key must be {MASTER_KEY_BYTES} bytes, got {len(master_key)}"
        )
    return AESGCM(master_key)


def seal(master_key: bytes, plaintext_key: bytes, aad: bytes) -> bytes:
    """Encrypt ``plaintext_key`` under ``master_key`` (AES-256-GCM, random nonce).

    >>> blob = seal(bytes(32), b"k" * 16, b"owner")
    >>> blob[0], len(blob)
    (1, 45)
    """
    aead = _check_master(master_key)
    nonce = secrets.token_bytes(_NONCE_BYTES)
    return _VERSION + nonce + aead.encrypt(nonce, plaintext_key, aad)


def unseal(master_key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a blob made by :func:`seal`; KeyStoreError on any mismatch or tampering."""
    aead = _check_master(master_key)
    if len(blob) < 1 + _NONCE_BYTES + _TAG_BYTES:
        raise KeyStoreError(f"keystore: sealed blob too short ({len(blob)} bytes)")
    if blob[:1] != _VERSION:
        raise KeyStoreError(f"keystore: unknown sealed blob version {blob[0]}")
    nonce = blob[1 : 1 + _NONCE_BYTES]
    try:
        return aead.decrypt(nonce, blob[1 + _NONCE_BYTES :], aad)
    except InvalidTag:
        raise KeyStoreError(
            "keystore: cannot unseal: wrong master key, wrong owner (aad) or tampered blob"
        ) from None


def generate_master_key_hex() -> str:
    """A new random master key as 64 lower-case hex characters.

    >>> len(generate_master_key_hex())
    64
    """
    return secrets.token_hex(MASTER_KEY_BYTES)


# The MAC algorithms a terminal may use and their key lengths (switch.mac computes the MACs;
# tests/test_portal_terminals.py checks the two agree).
MAC_ALGORITHMS = ("cmac-aes", "x919")
MAC_KEY_BYTES = {"cmac-aes": 16, "x919": 16}
KCV_BYTES = 3


def mac_key_length_ok(alg: str, key: bytes) -> bool:
    """True when ``key`` has the length ``alg`` needs (False for an unknown ``alg``).

    >>> mac_key_length_ok("x919", bytes(16)), mac_key_length_ok("x919", bytes(8)), mac_key_length_ok("?", b"")
    (True, False, False)
    """
    expected = MAC_KEY_BYTES.get(alg)
    return expected is not None and len(key) == expected


def generate_mac_key(alg: str) -> bytes:
    """A new random MAC key for ``alg``."""
    if alg not in MAC_KEY_BYTES:
        raise KeyStoreError(f"keystore: unknown MAC algorithm {alg!r}")
    return secrets.token_bytes(MAC_KEY_BYTES[alg])


def kcv(alg: str, key: bytes) -> str:
    """A key's check value: 6 hex digits that identify it without revealing it.

    For a double-length DES key (x919) the first 3 bytes of a zero block encrypted
    under it (3DES-ECB); for an AES key the first 3 bytes of the AES-CMAC of a zero
    block, as ANSI X9.24 counts them for AES.

    >>> kcv("x919", bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    '08D7B4'
    >>> len(kcv("cmac-aes", bytes(16)))
    6
    """
    if not mac_key_length_ok(alg, key):
        raise KeyStoreError(f"keystore: not a {alg} key")
    if alg == "x919":
        try:
            from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
        except ImportError:  # older cryptography
            from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
                TripleDES,
            )
        enc = Cipher(TripleDES(key + key[:8]), modes.ECB()).encryptor()  # K1 K2 K1
        check = enc.update(bytes(8)) + enc.finalize()
    else:
        c = cmac.CMAC(AES(key))
        c.update(bytes(16))
        check = c.finalize()
    return check[:KCV_BYTES].hex().upper()


# Key schemes of a terminal master key and the working keys a sign-on delivers under it: the
# scheme names the PIN block format (ISO 9564 format 0 under 'tdes', format 4 under 'aes') and
# the MAC algorithm of the working MAC key.
KEY_SCHEMES = ("tdes", "aes")
SCHEME_KEY_BYTES = 16  # double-length 3DES, AES-128
SCHEME_MAC_ALG = {"tdes": "x919", "aes": "cmac-aes"}


def scheme_kcv(scheme: str, key: bytes) -> str:
    """The check value of a 'tdes' or 'aes' key (as :func:`kcv` of its MAC algorithm).

    >>> scheme_kcv("tdes", bytes.fromhex("0123456789ABCDEFFEDCBA9876543210"))
    '08D7B4'
    """
    if scheme not in SCHEME_MAC_ALG:
        raise KeyStoreError(f"keystore: unknown key scheme {scheme!r}")
    return kcv(SCHEME_MAC_ALG[scheme], key)


def parse_key_file(path: str, what: str, length_bytes: int) -> bytes:
    """A key of ``length_bytes`` read from a file of hexadecimal characters (whitespace ignored).

    Errors name the file, never its content.
    """
    try:
        with open(path, encoding="ascii") as fh:
            compact = "".join(fh.read().split())
    except OSError as exc:
        raise KeyStoreError(f"{what}: cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise KeyStoreError(f"{what}: {path} is not hexadecimal") from None
    if len(compact) != 2 * length_bytes or not set(compact) <= _HEX_DIGITS:
        raise KeyStoreError(f"{what}: {path} must hold {2 * length_bytes} hexadecimal characters")
    return bytes.fromhex(compact)


def unseal_any(master_keys: tuple[bytes, ...], blob: bytes, aad: bytes) -> bytes:
    """Unseal with the first of ``master_keys`` that opens ``blob`` (during a master-key rotation a
    blob may be sealed under the new key or the old one); KeyStoreError when none does."""
    for master_key in master_keys:
        try:
            return unseal(master_key, blob, aad)
        except KeyStoreError:
            continue
    raise KeyStoreError("keystore: cannot unseal: wrong master key, wrong owner (aad) or tampered blob")
