"""Sign-on key exchange (specs/HOST-INTERFACE.md §10.2): fresh working keys under the terminal master key.

At a sign-on (0800, 70 = 001) of a terminal with a master key (TMK), the switch generates a PIN key
and a MAC key of the TMK's scheme, seals them under the master key for the database, and answers
them enciphered under the TMK with their check values in field 48 of the 0810:

- ``tdes``: each 16-byte key enciphered 3DES-ECB under the double-length TMK (32 hex characters);
- ``aes``: each 16-byte key wrapped with AES Key Wrap (RFC 3394) under the AES-128 TMK
  (48 hex characters).

Tags ``PK`` (PIN key), ``PC`` (its check value), ``MK`` (MAC key), ``MC`` (its check value), in
that order, in field 48's tag/length/value form. No key is ever logged.

>>> tmk = bytes(range(16))
>>> len(encipher_key("tdes", tmk, bytes(16))), len(encipher_key("aes", tmk, bytes(16)))
(16, 24)
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from ledger import keys

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography 42
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

TAG_PIN_KEY, TAG_PIN_KCV, TAG_MAC_KEY, TAG_MAC_KCV = "PK", "PC", "MK", "MC"


@dataclass(frozen=True, repr=False)
class WorkingKeys:
    """A sign-on's keys in clear (memory only) and as the terminal receives them."""

    scheme: str
    pin_key: bytes
    mac_key: bytes

    @property
    def mac_alg(self) -> str:
        return keys.SCHEME_MAC_ALG[self.scheme]

    def __repr__(self) -> str:  # never the keys
        return f"WorkingKeys(scheme={self.scheme!r})"


def encipher_key(scheme: str, tmk: bytes, key: bytes) -> bytes:
    """``key`` enciphered under ``tmk`` for transport to the terminal."""
    if scheme == "aes":
        return aes_key_wrap(tmk, key)
    enc = Cipher(TripleDES(tmk + tmk[:8]), modes.ECB()).encryptor()
    return enc.update(key) + enc.finalize()


def generate(scheme: str) -> WorkingKeys:
    """Fresh random working keys of ``scheme``."""
    if scheme not in keys.KEY_SCHEMES:
        raise keys.KeyStoreError(f"keystore: unknown key scheme {scheme!r}")
    return WorkingKeys(scheme, secrets.token_bytes(keys.SCHEME_KEY_BYTES), secrets.token_bytes(keys.SCHEME_KEY_BYTES))


def field_48(tmk: bytes, working: WorkingKeys) -> str:
    """Field 48 of the 0810: the keys under the TMK and their check values."""
    items = {
        TAG_PIN_KEY: encipher_key(working.scheme, tmk, working.pin_key).hex().upper(),
        TAG_PIN_KCV: keys.scheme_kcv(working.scheme, working.pin_key),
        TAG_MAC_KEY: encipher_key(working.scheme, tmk, working.mac_key).hex().upper(),
        TAG_MAC_KCV: keys.kcv(working.mac_alg, working.mac_key),
    }
    return "".join(f"{tag}{len(value):03d}{value}" for tag, value in items.items())
