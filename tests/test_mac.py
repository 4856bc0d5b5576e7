"""switch.mac against published vectors and an independent block-by-block implementation."""

from __future__ import annotations

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import given, settings
from hypothesis import strategies as st

from switch import mac

# NIST SP 800-38B, appendix D.1 (also RFC 4493 section 4): AES-128.
NIST_KEY = bytes.fromhex("2b7e151628aed2a6abf7158809cf4f3c")
NIST_MSG = bytes.fromhex(
    "6bc1bee22e409f96e93d7e117393172a"
    "ae2d8a571e03ac9c9eb76fac45af8e51"
    "30c81c46a35ce411e5fbc1191a0a52ef"
    "f69f2445df4f9b17ad2b417be66c3710"
)
NIST_CASES = [
    (0, "bb1d6929e95937287fa37d129b756746"),
    (16, "070a16b46b4d4144f79bdd9dd04a287c"),
    (40, "dfa66747de9ae63030ca32611497c827"),
    (64, "51f0bebf7e3b9d92fc49741779363cfe"),
]

# ANSI X9.19 / ISO 9797-1 MAC algorithm 3, padding method 1: the widely published example.
X919_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
X919_DATA = b"Now is the time for all "
X919_MAC = "A1C72E74EA3FA9B6"


@pytest.mark.parametrize(("length", "tag_hex"), NIST_CASES)
def test_cmac_aes_nist_vectors(length: int, tag_hex: str) -> None:
    data = NIST_MSG[:length]
    assert mac._cmac_aes_full(NIST_KEY, data).hex() == tag_hex
    assert mac.compute("cmac-aes", NIST_KEY, data) == bytes.fromhex(tag_hex)[:8]


def test_x919_published_vector() -> None:
    assert mac.compute("x919", X919_KEY, X919_DATA).hex().upper() == X919_MAC


def test_single_des_primitive_fips81_vector() -> None:
    # FIPS 81 / the classic DES example: proves "3DES with K1=K2=K3" is single DES.
    enc = Cipher(TripleDES(bytes.fromhex("0123456789ABCDEF") * 3), modes.ECB()).encryptor()
    assert enc.update(b"Now is t").hex().upper() == "3FA40E8A984D4815"


# --- independent reference implementations, one cipher call per block -------------------------


def _des_block(key8: bytes, block: bytes, decrypt: bool = False) -> bytes:
    cipher = Cipher(TripleDES(key8 * 3), modes.ECB())
    ctx = cipher.decryptor() if decrypt else cipher.encryptor()
    return ctx.update(block) + ctx.finalize()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def reference_x919(key: bytes, data: bytes) -> bytes:
    kl, kr = key[:8], key[8:]
    padded = data + bytes(-len(data) % 8) if data else bytes(8)
    state = bytes(8)
    for i in range(0, len(padded), 8):
        state = _des_block(kl, _xor(state, padded[i : i + 8]))
    return _des_block(kl, _des_block(kr, state, decrypt=True))


def _aes_block(key: bytes, block: bytes) -> bytes:
    enc = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return enc.update(block) + enc.finalize()


def _dbl(block: bytes) -> bytes:
    n = int.from_bytes(block, "big") << 1
    if n >> 128:
        n = (n ^ 0x87) & ((1 << 128) - 1)
    return n.to_bytes(16, "big")


def reference_cmac_aes(key: bytes, data: bytes) -> bytes:
    """SP 800-38B section 6.2 written out from the standard."""
    k1 = _dbl(_aes_block(key, bytes(16)))
    k2 = _dbl(k1)
    blocks = [data[i : i + 16] for i in range(0, len(data), 16)] or [b""]
    last = blocks[-1]
    if len(last) == 16:
        blocks[-1] = _xor(last, k1)
    else:
        blocks[-1] = _xor(last + b"\x80" + bytes(15 - len(last)), k2)
    state = bytes(16)
    for block in blocks:
        state = _aes_block(key, _xor(state, block))
    return state


@pytest.mark.parametrize(("length", "tag_hex"), NIST_CASES)
def test_reference_cmac_matches_nist(length: int, tag_hex: str) -> None:
    assert reference_cmac_aes(NIST_KEY, NIST_MSG[:length]).hex() == tag_hex


def test_reference_x919_matches_published() -> None:
    assert reference_x919(X919_KEY, X919_DATA).hex().upper() == X919_MAC


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=200))
def test_x919_matches_reference(key: bytes, data: bytes) -> None:
    assert mac.compute("x919", key, data) == reference_x919(key, data)


@settings(max_examples=200, deadline=None)
@given(key=st.binary(min_size=16, max_size=16), data=st.binary(max_size=200))
def test_cmac_matches_reference(key: bytes, data: bytes) -> None:
    assert mac.compute("cmac-aes", key, data) == reference_cmac_aes(key, data)[:8]


def test_x919_padding_is_method_1() -> None:
    # Trailing zeros are indistinguishable under method 1 (a documented property of it).
    assert mac.compute("x919", X919_KEY, b"abc") == mac.compute("x919", X919_KEY, b"abc\x00")
    assert mac.compute("x919", X919_KEY, b"") == mac.compute("x919", X919_KEY, bytes(8))


def test_x919_with_equal_halves_is_single_des_cbc_mac() -> None:
    key8 = bytes.fromhex("0123456789ABCDEF")
    assert mac.compute("x919", key8 * 2, b"Now is t") == bytes.fromhex("3FA40E8A984D4815")


@pytest.mark.parametrize("alg", mac.ALGORITHMS)
def test_verify_true_and_false(alg: str) -> None:
    key = bytes(range(16))
    data = b"0200 some message bytes"
    tag = mac.compute(alg, key, data)
    assert len(tag) == 8
    assert mac.verify(alg, key, data, tag)
    assert not mac.verify(alg, key, data + b"!", tag)
    assert not mac.verify(alg, key, data, bytes([tag[0] ^ 1]) + tag[1:])
    assert not mac.verify(alg, key, data, tag[:7])
    assert not mac.verify(alg, key, data, b"")
    assert not mac.verify(alg, bytes(reversed(range(16))), data, tag)


@pytest.mark.parametrize("alg", mac.ALGORITHMS)
@pytest.mark.parametrize("length", [0, 8, 15, 17, 24, 32])
def test_bad_key_length(alg: str, length: int) -> None:
    key = b"\xaa" * length
    assert not mac.key_length_ok(alg, key)
    with pytest.raises(ValueError, match="key must be 16 bytes") as info:
        mac.compute(alg, key, b"data")
    assert key.hex() not in str(info.value) or length == 0
    with pytest.raises(ValueError):
        mac.verify(alg, key, b"data", bytes(8))


def test_key_length_ok() -> None:
    assert mac.key_length_ok("cmac-aes", bytes(16))
    assert mac.key_length_ok("x919", bytes(16))
    assert not mac.key_length_ok("cmac-aes-256", bytes(16))


def test_unknown_algorithm() -> None:
    with pytest.raises(ValueError, match="unknown MAC algorithm 'hmac'"):
        mac.compute("hmac", bytes(16), b"")


def test_cached_ciphers_do_not_leak_state_between_calls() -> None:
    key = bytes(range(16))
    first = [mac.compute(alg, key, b"abc" * n) for alg in mac.ALGORITHMS for n in range(5)]
    second = [mac.compute(alg, key, b"abc" * n) for alg in mac.ALGORITHMS for n in range(5)]
    assert first == second
