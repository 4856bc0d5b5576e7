"""PIN blocks (ISO 9564-1): format 0 under a double-length 3DES key, format 4 under an AES key.

The switch only deciphers: a terminal enciphers the member's PIN under its working PIN key (the
sign-on's, see switch.keyexchange) and the switch recovers the PIN to compare its keyed one-way
value (ledger.loyalty.pins). A PIN, a PIN block and a key never appear in an exception message,
a log line or a metric: every failure is the one :class:`PinBlockError` with a fixed text.

Format 0: the PIN field (0, length, PIN digits, F fill) XOR the PAN field (four zeros and the 12
rightmost PAN digits excluding the check digit), enciphered as one 8-byte block.

Format 4: the 16-byte PIN field (4, length, PIN digits, A fill to 8 bytes, 8 random bytes) is
enciphered (block A), XORed with the PAN field (PAN length minus 12, the PAN, zero fill) and
enciphered again.

>>> clear_format0("1234", "5555555551234567").hex().upper()
'041261AAAAEDCBA9'
>>> pin_from_format0(bytes.fromhex("041261AAAAEDCBA9"), "5555555551234567")
'1234'
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.ciphers.algorithms import AES

from ledger.errors import SwitchdError

try:
    from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
except ImportError:  # pragma: no cover - cryptography 42
    from cryptography.hazmat.primitives.ciphers.algorithms import (  # type: ignore[attr-defined,no-redef]
        TripleDES,
    )

PIN_DIGITS_MIN = 4
PIN_DIGITS_MAX = 12
BLOCK_BYTES = {"tdes": 8, "aes": 16}
KEY_BYTES = 16


class PinBlockError(SwitchdError):
    """A PIN block that does not decipher to a well-formed PIN; ``str()`` never holds key or PIN data."""


def _bad() -> PinBlockError:
    return PinBlockError("PIN block does not decipher to a PIN")


def check_pin(pin: str) -> bool:
    """True for 4 to 12 decimal digits.

    >>> check_pin("1234"), check_pin("123"), check_pin("12a4")
    (True, False, False)
    """
    return pin.isascii() and pin.isdigit() and PIN_DIGITS_MIN <= len(pin) <= PIN_DIGITS_MAX


def _pan_field_0(pan: str) -> bytes:
    if not (pan.isascii() and pan.isdigit() and len(pan) >= 13):
        raise _bad()
    return bytes.fromhex("0000" + pan[:-1][-12:])


def clear_format0(pin: str, pan: str) -> bytes:
    """The clear format 0 PIN block (before encipherment)."""
    if not check_pin(pin):
        raise PinBlockError("a PIN is 4 to 12 digits")
    field = bytes.fromhex((f"0{len(pin):X}{pin}").ljust(16, "F"))
    return bytes(a ^ b for a, b in zip(field, _pan_field_0(pan), strict=True))


def pin_from_format0(clear: bytes, pan: str) -> str:
    """The PIN of a clear format 0 block; PinBlockError when it is not one."""
    if len(clear) != 8:
        raise _bad()
    return _pin_of(bytes(a ^ b for a, b in zip(clear, _pan_field_0(pan), strict=True)), "0", "F")


def _pin_of(field_bytes: bytes, control: str, fill: str) -> str:
    # The first 8 bytes of a PIN field: control nibble, length nibble, the digits, the fill.
    text = field_bytes[:8].hex().upper()
    length = int(text[1], 16)
    if text[0] != control or not PIN_DIGITS_MIN <= length <= PIN_DIGITS_MAX:
        raise _bad()
    pin = text[2:2 + length]
    if not pin.isdigit() or text[2 + length:] != fill * (14 - length):
        raise _bad()
    return pin


def _pan_field_4(pan: str) -> bytes:
    if not (pan.isascii() and pan.isdigit() and 1 <= len(pan) <= 19):
        raise _bad()
    indicator = max(len(pan) - 12, 0)
    return bytes.fromhex((f"{indicator:X}" + pan.rjust(12, "0")).ljust(32, "0"))


def pin_from_format4_field(field_bytes: bytes) -> str:
    """The PIN of a clear format 4 PIN field; PinBlockError when it is not one.

    >>> pin_from_format4_field(bytes.fromhex("441234AAAAAAAAAA548ED7FD65495950"))
    '1234'
    """
    if len(field_bytes) != 16:
        raise _bad()
    return _pin_of(field_bytes, "4", "A")


# Cached per key, as switch.mac does: the key schedule is paid once per terminal's PIN key.
_CACHE_KEYS_MAX = 4096


@lru_cache(maxsize=_CACHE_KEYS_MAX)
def _tdes(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(TripleDES(key + key[:8]), modes.ECB())  # double length: K1 K2 K1


@lru_cache(maxsize=_CACHE_KEYS_MAX)
def _aes(key: bytes) -> Cipher[modes.ECB]:
    return Cipher(AES(key), modes.ECB())


def decipher(scheme: str, key: bytes, block: bytes, pan: str) -> str:
    """The PIN in ``block`` enciphered under ``key`` ('tdes': format 0, 'aes': format 4) for ``pan``.

    PinBlockError for a block of the wrong length or one that does not decipher to a PIN.
    """
    if len(key) != KEY_BYTES or scheme not in BLOCK_BYTES or len(block) != BLOCK_BYTES[scheme]:
        raise _bad()
    if scheme == "tdes":
        dec = _tdes(key).decryptor()
        return pin_from_format0(dec.update(block) + dec.finalize(), pan)
    dec = _aes(key).decryptor()
    block_b = dec.update(block)
    block_a = bytes(a ^ b for a, b in zip(block_b, _pan_field_4(pan), strict=True))
    return pin_from_format4_field(dec.update(block_a) + dec.finalize())
