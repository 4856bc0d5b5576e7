"""POS simulator: send one ISO 8583 request to the switch and print the answer.

Talks to the daemon over TCP only (framing, codec and MAC are the tools' own).

    python -m tools.possim --port 8583 --tid T0000001 --mid M00000000000001 \\
        --mti 0200 --proc 000000 --pan 6250941234567890 --amount 1000 \\
        --mac-alg cmac-aes --mac-key 000102030405060708090A0B0C0D0E0F

Stored-value pre-authorisation (specs/HOST-INTERFACE.md §6.1): ``--preauth`` sends a 0100
(field 3 ``006000``; ``--hold-s`` asks for the hold's life in field 48 tag HT); ``--complete
STAN:F7`` completes the 0100 that had that field 11 and field 7 (a 0200 ``006000`` whose field 90
names it; with ``--advice``, a 0220); ``--release STAN:F7`` reverses it (a 0400). The response
echoes 11 and 7, which is what a later completion names::

    python -m tools.possim --tid T0000001 --mid M0001 --sign-on --preauth --pan 6250941234567890 \
        --amount 6000 --hold-s 600
    python -m tools.possim --tid T0000001 --mid M0001 --complete 123456:0309140507 \
        --pan 6250941234567890 --amount 4500
A terminal with a master key signs on for its working keys and enciphers the member's PIN
(field 52, ISO 9564 format 0, for ``tdes``; field 110, format 4, for ``aes``):

    python -m tools.possim --port 8583 --tid T0000002 --mid M00000000000001 --sign-on \
        --tmk 0123456789ABCDEFFEDCBA9876543210 --tmk-alg tdes \
        --mti 0200 --proc 006000 --pan 6250941234567890 --amount 1000 --pin 1234

Field 49 (currency) goes with every money amount (specs/HOST-INTERFACE.md §6),
156 unless ``--currency`` says otherwise (``--currency ''`` sends none); points
amounts carry none. A 30 (format error) answer is followed by a hint line.

Exit status: 0 when a response arrived, 1 on a timeout or connection error
(one line on stderr), 2 on bad options.
"""

from __future__ import annotations

import random
import socket
import sys
import time
from collections.abc import Mapping, Sequence

import click
import iso8583

from specs.vocabulary import FORMAT_ERROR
from tools import _mac, _msg, _pin, _wire

# Requests whose field 4 is an amount (money or points, by field 3).
AMOUNT_MTIS = frozenset({"0100", "0200", "0220", "0221", "0400", "0420", "0421"})
PREAUTH_PROC = "006000"  # a pre-authorisation and its completion: stored value
DEFAULT_CURRENCY = "156"
POINTS_ACCOUNT = "65"
INQUIRY_TYPE = "31"  # field 4 is 0: no currency needed
# specs/HOST-INTERFACE.md §5.1, without 49 (which depends on field 3).
MANDATORY = {
    "0100": ("2", "3", "4", "7", "11", "41", "42"),
    "0200": ("2", "3", "4", "7", "11", "41", "42"),
    "0220": ("2", "3", "4", "7", "11", "41", "42"),
    "0400": ("2", "3", "4", "7", "11", "41", "42"),
    "0420": ("2", "3", "4", "7", "11", "41", "42"),
    "0421": ("2", "3", "4", "7", "11", "41", "42"),
    "0500": ("3", "7", "11", "41", "42", "60", "74", "76", "86", "88"),
    "0800": ("7", "11", "41", "70"),
}


def amount_is_money(mti: str, proc: str) -> bool:
    """Whether field 4 of this request is money, which then needs a currency (field 49).

    Points when either account type of field 3 is 65; a balance inquiry's amount is 0.

    >>> [amount_is_money("0200", pc) for pc in ("000000", "006000", "210060", "020000", "206000")]
    [True, True, True, True, True]
    >>> [amount_is_money("0200", pc) for pc in ("006500", "210065", "026500", "906500", "310000")]
    [False, False, False, False, False]
    >>> amount_is_money("0800", "000000"), amount_is_money("0400", "000000")
    (False, True)
    """
    if mti not in AMOUNT_MTIS:
        return False
    return POINTS_ACCOUNT not in (proc[2:4], proc[4:6]) and proc[:2] != INQUIRY_TYPE


def format_error_hint(fields: Mapping[str, str]) -> str:
    """One line on why a request may have been answered 30 (format error).

    >>> format_error_hint({"t": "0200", "2": "6", "3": "210060", "4": "1", "7": "1", "11": "1", "41": "T"})
    'hint: 30 is a format error; this request lacks mandatory field(s) 42, 49 (specs/HOST-INTERFACE.md §5.1)'
    """
    mti = fields.get("t", "")
    need = list(MANDATORY.get(mti, ()))
    if amount_is_money(mti, fields.get("3", "000000")):
        need.append("49")
    missing = [n for n in need if n not in fields]
    if missing:
        return (f"hint: 30 is a format error; this request lacks mandatory field(s) {', '.join(missing)} "
                "(specs/HOST-INTERFACE.md §5.1)")
    return ("hint: 30 is a format error; a field's value is malformed or not allowed here "
            "(specs/HOST-INTERFACE.md §5); the switch's request log line names it (error=...)")


def preauth_options(preauth: bool, hold_s: int | None, complete: str, release: str,
                    advice: bool) -> tuple[str, str, dict[str, str]] | None:
    """(MTI, field 3, extra fields) for the pre-authorisation options, or None when none is given.

    ValueError when they contradict each other or a ``STAN:F7`` is malformed.

    >>> preauth_options(True, 600, "", "", False)
    ('0100', '006000', {'48': 'HT003600'})
    >>> preauth_options(False, None, "42:0309140507", "", True)
    ('0220', '006000', {'90': '010000004203091405070000000000000000000000'})
    >>> preauth_options(False, None, "", "42:0309140507", False)[0]
    '0400'
    """
    chosen = [name for name, on in (("--preauth", preauth), ("--complete", bool(complete)),
                                    ("--release", bool(release))) if on]
    if len(chosen) > 1:
        raise ValueError(f"{' and '.join(chosen)} exclude each other")
    if hold_s is not None and not preauth:
        raise ValueError("--hold-s goes with --preauth")
    if advice and not complete:
        raise ValueError("--advice goes with --complete")
    if preauth:
        if hold_s is not None and not 1 <= hold_s <= 999_999:
            raise ValueError(f"--hold-s must be 1..999999 seconds, got {hold_s}")
        return "0100", PREAUTH_PROC, ({"48": f"HT{len(str(hold_s)):03d}{hold_s}"} if hold_s is not None else {})
    named = complete or release
    if not named:
        return None
    stan, sep, when = named.partition(":")
    if not (sep and stan.isascii() and stan.isdigit() and len(stan) <= 6 and when.isascii() and when.isdigit()
            and len(when) == 10):
        raise ValueError(f"--complete/--release expect the 0100's STAN:F7 (e.g. 000042:0309140507), got {named!r}")
    original = "0100" + stan.zfill(6) + when + "0" * 22
    mti = ("0220" if advice else "0200") if complete else "0400"
    return mti, PREAUTH_PROC, {"90": original}


class SimError(Exception):
    """A failure to report as one line (timeout, connection, protocol)."""


def parse_field_option(items: Sequence[str]) -> dict[str, str]:
    """``N=VALUE`` options to a field dict; ValueError on a malformed item.

    >>> parse_field_option(["48=PG003ABC", "25=00"])
    {'48': 'PG003ABC', '25': '00'}
    """
    out: dict[str, str] = {}
    for item in items:
        number, sep, value = item.partition("=")
        if not sep or not (number.strip().isascii() and number.strip().isdigit()) or not 1 < int(number) <= 128:
            raise ValueError(f"--field expects N=VALUE with 2 <= N <= 128, got {item!r}")
        out[str(int(number))] = value
    return out


def build_request(
    *,
    mti: str,
    stan: str,
    tid: str,
    mid: str,
    now: str,
    proc: str = "",
    pan: str = "",
    amount: str = "",
    currency: str | None = None,
    rrn: str = "",
    extra: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The decoded request fields the options describe (MAC not included).

    ``currency`` None: DEFAULT_CURRENCY when the amount is money, none for points;
    an empty string: none.

    >>> req = build_request(mti="0800", stan="000001", tid="T1", mid="", now="0309140507")
    >>> req["41"], req["70"]
    ('T1      ', '301')
    """
    fields: dict[str, str] = {"t": mti, "7": now, "11": stan, "41": _msg.pad_tid(tid)}
    network = mti.startswith("08")
    if pan:
        fields["2"] = pan
    if proc or mti in ("0100", "0200", "0220", "0400", "0420"):
        fields["3"] = proc or "000000"
    if amount:
        fields["4"] = f"{int(amount):012d}"
    elif mti in ("0100", "0200", "0220", "0400", "0420"):
        fields["4"] = "0" * 12
    if rrn:
        fields["37"] = rrn
    if mid and not network:
        fields["42"] = _msg.pad_mid(mid)
    if currency is None:
        currency = DEFAULT_CURRENCY if amount_is_money(mti, fields.get("3", "")) else ""
    if currency and not network:
        fields["49"] = currency
    if network:
        fields["70"] = "301"
    fields.update(extra or {})
    return fields


class Connection:
    """One blocking TCP connection speaking the framing of one listener."""

    def __init__(self, host: str, port: int, framing: str, tpdu: bytes, timeout_s: float) -> None:
        self.framing = framing
        self.tpdu = tpdu
        self.timeout_s = timeout_s
        try:
            self.sock = socket.create_connection((host, port), timeout=timeout_s)
        except TimeoutError:
            raise SimError(f"connect to {host}:{port} timed out after {timeout_s}s") from None
        except OSError as exc:
            raise SimError(f"cannot connect to {host}:{port}: {exc.strerror or exc}") from None
        self._buffer = b""

    def close(self) -> None:
        self.sock.close()

    def send(self, message: bytes) -> None:
        try:
            self.sock.sendall(_wire.frame(message, self.framing, self.tpdu))
        except OSError as exc:
            raise SimError(f"send failed: {exc.strerror or exc}") from None

    def _read(self, size: int, deadline: float) -> bytes:
        while len(self._buffer) < size:
            remaining_s = deadline - time.monotonic()
            if remaining_s <= 0:
                raise SimError(f"no response within {self.timeout_s}s")
            self.sock.settimeout(remaining_s)
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError:
                raise SimError(f"no response within {self.timeout_s}s") from None
            except OSError as exc:
                raise SimError(f"receive failed: {exc.strerror or exc}") from None
            if not chunk:
                raise SimError("connection closed by the switch before a response arrived")
            self._buffer += chunk
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def receive(self) -> _wire.Frame:
        """The next frame that is not a keep-alive, within ``timeout_s``."""
        deadline = time.monotonic() + self.timeout_s
        size = _wire.header_bytes(self.framing)
        while True:
            try:
                length = _wire.parse_length(self._read(size, deadline), self.framing)
            except _wire.FrameError as exc:
                raise SimError(f"bad response frame: {exc}") from None
            if length == 0:
                continue
            body = self._read(length, deadline)
            try:
                return _wire.split_tpdu(body, bool(self.tpdu), offset=size)
            except _wire.FrameError as exc:
                raise SimError(f"bad response frame: {exc}") from None


def exchange(
    conn: Connection, fields: Mapping[str, str], spec_name: str, mac_alg: str, mac_key: bytes
) -> tuple[bytes, bytes]:
    """Send one request (MACed unless it is network management); return (tpdu, raw response)."""
    macing = bool(mac_key) and _msg.macs(fields["t"])
    raw = _msg.build(fields, spec_name, mac_alg if macing else "", mac_key if macing else b"")
    conn.send(raw)
    got = conn.receive()
    return got.tpdu, got.message


def report(
    raw: bytes, tpdu: bytes, sent_tpdu: bytes, spec_name: str, mac_alg: str, mac_key: bytes
) -> list[str]:
    """Lines describing a response: TPDU check, masked fields, MAC verdict."""
    lines: list[str] = []
    if sent_tpdu:
        swapped = tpdu == _wire.swap_tpdu(sent_tpdu)
        lines.append(f"tpdu {tpdu.hex().upper()} ({'swapped ok' if swapped else 'NOT swapped'})")
    try:
        fields, _enc = _msg.decode(raw, spec_name)
    except iso8583.DecodeError as exc:
        return [*lines, f"response does not decode: {exc}"]
    lines.extend(_msg.format_fields({k: v for k, v in fields.items() if k != "p"}))
    if mac_key:
        verdict = _msg.mac_verdict(raw, fields, spec_name, mac_alg, mac_key)
        lines.append("MAC absent" if verdict is None else ("MAC ok" if verdict else "MAC BAD"))
    return lines


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8583, show_default=True, type=int)
@click.option("--framing", type=click.Choice(["nac2", "ascii4"]), default="nac2", show_default=True)
@click.option("--spec", "spec_name", type=click.Choice(_msg.SPEC_NAMES), default="pos", show_default=True)
@click.option("--tpdu", "tpdu_hex", default="", help="TPDU to send, 10 hex chars (e.g. 6000010002).")
@click.option("--tid", default="T0000001", show_default=True, help="Terminal id (field 41).")
@click.option("--mid", default="", help="Merchant id (field 42).")
@click.option("--mac-alg", type=click.Choice(_mac.ALGORITHMS), default="cmac-aes", show_default=True)
@click.option("--mac-key", "mac_key_hex", default="", help="Terminal MAC key, 32 hex chars.")
@click.option("--timeout-s", default=5.0, show_default=True, type=float)
@click.option("--sign-on/--no-sign-on", default=False, show_default=True, help="Send 0800/001 first.")
@click.option("--mti", default="0800", show_default=True)
@click.option("--proc", default="", help="Processing code (field 3).")
@click.option("--pan", default="", help="Card number (field 2).")
@click.option("--amount", default="", help="Amount in minor units or points (field 4).")
@click.option("--currency", default=None,
              help=f"Currency code (field 49); default {DEFAULT_CURRENCY} for money amounts, none for points; "
                   "'' sends none.")
@click.option("--stan", default="", help="STAN (field 11); random when omitted.")
@click.option("--rrn", default="", help="RRN (field 37), e.g. of the original for a void.")
@click.option("--field", "field_items", multiple=True, help="Extra field N=VALUE (repeatable).")
@click.option("--preauth", is_flag=True, help="Send a stored-value pre-authorisation (0100, field 3 006000).")
@click.option("--hold-s", type=int, default=None, help="With --preauth: the hold's life asked for, in seconds.")
@click.option("--complete", default="", metavar="STAN:F7",
              help="Complete the 0100 with that field 11 and field 7 (0200 006000, field 90).")
@click.option("--advice", is_flag=True, help="With --complete: send it as a completion advice (0220).")
@click.option("--release", default="", metavar="STAN:F7", help="Release the 0100 with that field 11 and 7 (0400).")
@click.option("--tmk", "tmk_hex", default="",
              help="Terminal master key, 32 hex chars: take the working keys of the sign-on (needs --sign-on).")
@click.option("--tmk-alg", type=click.Choice(_pin.SCHEMES), default="tdes", show_default=True,
              help="The master key's scheme: tdes (PIN in 52, format 0) or aes (PIN in 110, format 4).")
@click.option("--pin", default="", help="The member's PIN: sent enciphered under the sign-on's PIN key.")
def main(
    host: str,
    port: int,
    framing: str,
    spec_name: str,
    tpdu_hex: str,
    tid: str,
    mid: str,
    mac_alg: str,
    mac_key_hex: str,
    timeout_s: float,
    sign_on: bool,
    mti: str,
    proc: str,
    pan: str,
    amount: str,
    currency: str | None,
    stan: str,
    rrn: str,
    field_items: tuple[str, ...],
    preauth: bool,
    hold_s: int | None,
    complete: str,
    advice: bool,
    release: str,
    tmk_hex: str,
    tmk_alg: str,
    pin: str,
) -> None:
    """Send one request to the switch and print the decoded response."""
    try:
        tpdu = _wire.parse_tpdu_hex(tpdu_hex) if tpdu_hex else b""
        if tpdu and framing != "nac2":
            raise ValueError("--tpdu needs --framing nac2")
        mac_key = bytes.fromhex(mac_key_hex) if mac_key_hex else b""
        if mac_key:
            _mac.check_key(mac_alg, mac_key)
        if amount and not (amount.isascii() and amount.isdigit()):
            raise ValueError(f"--amount must be digits, got {amount!r}")
        if stan and not (stan.isascii() and stan.isdigit() and len(stan) <= 6):
            raise ValueError(f"--stan must be up to 6 digits, got {stan!r}")
        extra = parse_field_option(field_items)
        chosen = preauth_options(preauth, hold_s, complete, release, advice)
        if chosen is not None:
            mti, proc = chosen[0], chosen[1]
            extra = {**chosen[2], **extra}
        tmk = bytes.fromhex(tmk_hex) if tmk_hex else b""
        if tmk and (len(tmk) != 16 or not sign_on):
            raise ValueError("--tmk is 32 hex characters and goes with --sign-on")
        if pin and not (tmk and pan and pin.isascii() and pin.isdigit() and 4 <= len(pin) <= 12):
            raise ValueError("--pin is 4 to 12 digits and needs --tmk, --sign-on and --pan")
        stan = (stan or str(random.randint(1, 999_999))).zfill(6)
        fields = build_request(
            mti=mti, stan=stan, tid=tid, mid=mid, now=_msg.transmission_datetime(),
            proc=proc, pan=pan, amount=amount, currency=currency, rrn=rrn, extra=extra,
        )
        _msg.build(fields, spec_name)  # fail early, before connecting, on unencodable fields
    except (ValueError, iso8583.EncodeError) as exc:
        raise click.UsageError(str(exc)) from None

    try:
        conn = Connection(host, port, framing, tpdu, timeout_s)
        try:
            if sign_on:
                sign_on_fields = build_request(
                    mti="0800", stan=f"{(int(stan) % 999_999) + 1:06d}", tid=tid, mid="",
                    now=_msg.transmission_datetime(), extra={"70": "001"},
                )
                _tpdu, raw = exchange(conn, sign_on_fields, spec_name, mac_alg, mac_key)
                answer = _msg.decode(raw, spec_name)[0]
                click.echo(f"sign-on: {answer.get('t')} response code {answer.get('39', '--')}")
                if tmk:
                    try:
                        pin_key, mac_key = _pin.working_keys(tmk_alg, tmk, answer.get("48", ""))
                    except (KeyError, ValueError) as exc:
                        raise SimError(f"sign-on delivered no usable working keys: {exc}") from None
                    mac_alg = _pin.MAC_ALG[tmk_alg]
                    click.echo(f"sign-on: working keys received (PIN key {_pin.kcv(tmk_alg, pin_key)}, "
                               f"MAC key {_pin.kcv(tmk_alg, mac_key)})")
                    if pin:
                        fields[_pin.PIN_FIELD[tmk_alg]] = _pin.pin_block(tmk_alg, pin_key, pin, pan).hex().upper()
            got_tpdu, raw = exchange(conn, fields, spec_name, mac_alg, mac_key)
        finally:
            conn.close()
    except SimError as exc:
        click.echo(f"possim: {exc}", err=True)
        sys.exit(1)
    except iso8583.DecodeError as exc:
        click.echo(f"possim: sign-on response does not decode: {exc}", err=True)
        sys.exit(1)
    for line in report(raw, got_tpdu, tpdu, spec_name, mac_alg, mac_key):
        click.echo(line)
    try:
        code = _msg.decode(raw, spec_name)[0].get("39")
    except iso8583.DecodeError:
        code = None  # report() said so already
    if code == FORMAT_ERROR:
        click.echo(format_error_hint(fields))


if __name__ == "__main__":
    main()
