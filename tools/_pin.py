"""The tools' own PIN blocks and sign-on key handling (deliberately not ``switch.pinblock``).

A terminal's side: build an ISO 9564 PIN block (format 0 under a 3DES key, format 4 under an AES
key) and recover the working keys of a sign-on's 0810 (field 48 tags PK, PC, MK, MC) under the
terminal master key, checking their check values. Written apart from the switch, so that the
two agree only when both follow the standards (tests/test_terminal_crypto.py checks both against
published vectors).

>>> format0_clear("1234", "5555555551234567").hex().upper()
'041261AAAAEDCBA9'
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import cmac as _cmac
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.keywrap import InvalidUnwrap, aes_key_unwrap

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography 42
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

SCHEMES = ("tdes", "aes")
MAC_ALG = {"tdes": "x919", "aes": "cmac-aes"}
PIN_FIELD = {"tdes": "52", "aes": "110"}


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def format0_clear(pin: str, pan: str) -> bytes:
    """ISO 9564 format 0, before encipherment: PIN field XOR PAN field."""
    pin_field = bytes.fromhex((f"0{len(pin):X}{pin}" + "F" * 16)[:16])
    pan_field = bytes.fromhex("0000" + pan[-13:-1])
    return _xor(pin_field, pan_field)


def format4_pin_field(pin: str, random_tail: bytes | None = None) -> bytes:
    """ISO 9564 format 4 plain-text PIN field: 4, length, PIN, A fill; then 8 random bytes."""
    head = bytes.fromhex((f"4{len(pin):X}{pin}" + "A" * 16)[:16])
    return head + (os.urandom(8) if random_tail is None else random_tail)


def format4_pan_field(pan: str) -> bytes:
    """ISO 9564 format 4 PAN field: PAN length minus 12 (0 when shorter), the PAN left-padded to
    12 digits, zeros to 16 bytes."""
    return bytes.fromhex((f"{max(len(pan) - 12, 0):X}{pan.rjust(12, '0')}" + "0" * 32)[:32])


def _tdes_ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key + key[:8]), modes.ECB())


def _aes_ecb(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(algorithms.AES(key), modes.ECB())


def pin_block(scheme: str, pin_key: bytes, pin: str, pan: str, random_tail: bytes | None = None) -> bytes:
    """The enciphered PIN block a terminal sends: 8 bytes (tdes, format 0) or 16 (aes, format 4)."""
    if scheme == "tdes":
        enc = _tdes_ecb(pin_key).encryptor()
        return enc.update(format0_clear(pin, pan)) + enc.finalize()
    enc = _aes_ecb(pin_key).encryptor()
    block_a = enc.update(format4_pin_field(pin, random_tail))
    return enc.update(_xor(block_a, format4_pan_field(pan))) + enc.finalize()


def kcv(scheme: str, key: bytes) -> str:
    """A key's check value: 3DES of a zero block, or AES-CMAC of a zero block; first 3 bytes."""
    if scheme == "tdes":
        enc = _tdes_ecb(key).encryptor()
        return (enc.update(bytes(8)) + enc.finalize())[:3].hex().upper()
    mac = _cmac.CMAC(algorithms.AES(key))
    mac.update(bytes(16))
    return mac.finalize()[:3].hex().upper()


def parse_tags(value: str) -> dict[str, str]:
    """Field 48's tag (2), length (3 digits), value items.

    >>> parse_tags("PK003ABCPC002XY")
    {'PK': 'ABC', 'PC': 'XY'}
    """
    out: dict[str, str] = {}
    i = 0
    while i + 5 <= len(value):
        tag, length = value[i:i + 2], int(value[i + 2:i + 5])
        out[tag] = value[i + 5:i + 5 + length]
        i += 5 + length
    return out


class KeyCheckError(ValueError):
    """A delivered key does not match its check value (wrong TMK, or damaged in transit)."""


def working_keys(scheme: str, tmk: bytes, field_48: str) -> tuple[bytes, bytes]:
    """(PIN key, MAC key) recovered from a sign-on's field 48 under ``tmk``; KeyCheckError on a mismatch."""
    tags = parse_tags(field_48)
    out = []
    for key_tag, kcv_tag, kcv_scheme in (("PK", "PC", scheme), ("MK", "MC", scheme)):
        wrapped = bytes.fromhex(tags[key_tag])
        if scheme == "aes":
            try:
                key = aes_key_unwrap(tmk, wrapped)
            except InvalidUnwrap:
                raise KeyCheckError(f"{key_tag} does not unwrap under this master key") from None
        else:
            dec = _tdes_ecb(tmk).decryptor()
            key = dec.update(wrapped) + dec.finalize()
        if kcv(kcv_scheme, key) != tags[kcv_tag]:
            raise KeyCheckError(f"{key_tag} does not match its check value {kcv_tag}")
        out.append(key)
    return out[0], out[1]
