"""switch.keystore: sealing terminal keys under the master key."""

from __future__ import annotations

from pathlib import Path

import pytest

from switch import keystore
from switch.keystore import KeyStoreError

MASTER_HEX = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
MASTER = bytes.fromhex(MASTER_HEX)
TERMINAL_KEY = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
AAD = b"terminal:T0000001:x919"


def _no_secret(message: str, *secrets: bytes) -> None:
    lowered = message.lower()
    for secret in secrets:
        assert secret.hex() not in lowered
        assert secret.hex()[:16] not in lowered


def test_roundtrip() -> None:
    blob = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    assert blob[0] == 1
    assert len(blob) == 1 + 12 + len(TERMINAL_KEY) + 16
    assert TERMINAL_KEY not in blob
    assert keystore.unseal(MASTER, blob, AAD) == TERMINAL_KEY


def test_nonce_is_random() -> None:
    a = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    b = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    assert a[1:13] != b[1:13]
    assert a != b


@pytest.mark.parametrize("position", [0, 1, 12, 13, 20, -1])
def test_tamper_detected(position: int) -> None:
    blob = bytearray(keystore.seal(MASTER, TERMINAL_KEY, AAD))
    blob[position] ^= 0x01
    with pytest.raises(KeyStoreError) as info:
        keystore.unseal(MASTER, bytes(blob), AAD)
    _no_secret(str(info.value), MASTER, TERMINAL_KEY)
    assert "\n" not in str(info.value)


def test_truncated_blob() -> None:
    blob = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    for cut in (0, 1, 13, 28):
        with pytest.raises(KeyStoreError, match="too short"):
            keystore.unseal(MASTER, blob[:cut], AAD)


def test_wrong_aad() -> None:
    blob = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    with pytest.raises(KeyStoreError, match="cannot unseal") as info:
        keystore.unseal(MASTER, blob, b"terminal:T0000002:x919")
    _no_secret(str(info.value), MASTER, TERMINAL_KEY)


def test_wrong_master() -> None:
    blob = keystore.seal(MASTER, TERMINAL_KEY, AAD)
    other = bytes.fromhex(keystore.generate_master_key_hex())
    with pytest.raises(KeyStoreError, match="cannot unseal") as info:
        keystore.unseal(other, blob, AAD)
    _no_secret(str(info.value), MASTER, other, TERMINAL_KEY)


@pytest.mark.parametrize("length", [0, 16, 24, 31, 33])
def test_master_of_wrong_length(length: int) -> None:
    bad = b"\x5a" * length
    with pytest.raises(KeyStoreError, match="32 bytes") as info:
        keystore.seal(bad, TERMINAL_KEY, AAD)
    _no_secret(str(info.value), TERMINAL_KEY)
    with pytest.raises(KeyStoreError, match="32 bytes"):
        keystore.unseal(bad, b"\x01" + bytes(40), AAD)


def test_generate_master_key_hex() -> None:
    a, b = keystore.generate_master_key_hex(), keystore.generate_master_key_hex()
    assert len(a) == 64 and a != b
    assert len(bytes.fromhex(a)) == 32


def test_load_from_file(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text(MASTER_HEX.upper() + "\n", encoding="ascii")
    assert keystore.load_master_key(str(path), "SWITCHD_MASTER_KEY", env={}) == MASTER


def test_file_wins_over_env(tmp_path: Path) -> None:
    path = tmp_path / "master.key"
    path.write_text("  " + MASTER_HEX + "  \n\n", encoding="ascii")
    env = {"SWITCHD_MASTER_KEY": "ff" * 32}
    assert keystore.load_master_key(str(path), "SWITCHD_MASTER_KEY", env=env) == MASTER


def test_load_from_env() -> None:
    env = {"MY_MK": MASTER_HEX}
    assert keystore.load_master_key("", "MY_MK", env=env) == MASTER


def test_load_from_process_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWITCHD_TEST_MK", MASTER_HEX)
    assert keystore.load_master_key("", "SWITCHD_TEST_MK") == MASTER


def test_none_configured() -> None:
    assert keystore.load_master_key("", "SWITCHD_MASTER_KEY", env={}) is None
    assert keystore.load_master_key("", "SWITCHD_MASTER_KEY", env={"SWITCHD_MASTER_KEY": ""}) is None
    assert keystore.load_master_key("", "", env={"": MASTER_HEX}) is None


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (MASTER_HEX[:-2], "expected 64 hex characters, got 62"),
        (MASTER_HEX + "00", "expected 64 hex characters, got 66"),
        (MASTER_HEX[:-1] + "g", "not hexadecimal"),
        ("x" * 64, "not hexadecimal"),
    ],
)
def test_bad_env_value(value: str, problem: str) -> None:
    with pytest.raises(KeyStoreError) as info:
        keystore.load_master_key("", "MY_MK", env={"MY_MK": value})
    message = str(info.value)
    assert "environment variable MY_MK" in message
    assert problem in message
    assert value not in message and value[:16] not in message


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (MASTER_HEX[:32], "expected 64 hex characters, got 32"),
        (MASTER_HEX[:-1] + "z\n", "not hexadecimal"),
    ],
)
def test_bad_file_value(tmp_path: Path, content: str, problem: str) -> None:
    path = tmp_path / "mk"
    path.write_text(content, encoding="ascii")
    with pytest.raises(KeyStoreError) as info:
        keystore.load_master_key(str(path), "MY_MK", env={})
    message = str(info.value)
    assert str(path) in message and problem in message
    assert content.strip() not in message and content[:16] not in message


def test_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "mk.bin"
    path.write_bytes(MASTER)
    with pytest.raises(KeyStoreError, match="not hexadecimal|expected 64") as info:
        keystore.load_master_key(str(path), "MY_MK", env={})
    _no_secret(str(info.value), MASTER)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.key"
    with pytest.raises(KeyStoreError, match="cannot read master key file") as info:
        keystore.load_master_key(str(path), "MY_MK", env={"MY_MK": MASTER_HEX})
    assert str(path) in str(info.value)
