"""Decode ISO 8583 messages given in hex and print their fields, masked.

    python -m tools.isodump --framing nac2 --spec pos 0036303830308220...
    some-capture | python -m tools.isodump --framing ascii4 --spec mis

One frame (or bare message, ``--framing none``) per line; blank lines and
lines starting with ``#`` are skipped. PANs are masked to first 6 / last 4;
fields 35, 45, 52 and the MAC are shown by length only. A line that does not
decode is reported with the position of the problem, never a traceback, and
the exit status is 1 if any line failed.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

import click
import iso8583

from tools import _msg, _wire


def _parse_hex(text: str) -> bytes:
    compact = "".join(text.split())
    if len(compact) % 2:
        raise ValueError(f"odd number of hex digits ({len(compact)})")
    for i, ch in enumerate(compact):
        if ch not in "0123456789abcdefABCDEF":
            raise ValueError(f"not hex: {ch!r} at hex digit {i}")
    return bytes.fromhex(compact)


def dump(text: str, framing: str, spec_name: str, has_tpdu: bool) -> list[str]:
    """Describe one line of hex; raises ValueError with a position when it does not decode.

    >>> for line in dump("303830308220000000800000" "0400000000000000" "30333039313430353037"
    ...                  "303030303031" "5430303030303031" "333031", "none", "pos", False):
    ...     print(line)
    0800 (47 bytes)
      t    0800
      p    8220000000800000
      1    0400000000000000
      7    0309140507
      11   000001
      41   T0000001
      70   301
    """
    data = _parse_hex(text)
    got = _wire.unframe(data, framing, has_tpdu)
    if not got.message:
        return ["keep-alive"]
    offset = len(data) - len(got.message)
    try:
        fields, _enc = _msg.decode(got.message, spec_name)
    except iso8583.DecodeError as exc:
        raise ValueError(
            f"field {exc.field} at byte {exc.pos + offset}: {exc.msg}"
        ) from None
    head = f"{fields.get('t', '????')} ({len(got.message)} bytes"
    if framing != "none":
        head += f", {framing} frame {len(data)} bytes"
    if got.tpdu:
        head += f", tpdu {got.tpdu.hex().upper()}"
    lines = [head + ")"]
    lines += ["  " + line for line in _msg.format_fields(fields)]
    return lines


def dump_lines(lines: Iterable[str], framing: str, spec_name: str, has_tpdu: bool) -> tuple[list[str], int]:
    """Dump each non-blank, non-comment line; return (output, number of failed lines)."""
    out: list[str] = []
    failures = 0
    for number, line in enumerate(lines, start=1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            described = dump(text, framing, spec_name, has_tpdu)
        except ValueError as exc:
            failures += 1
            out.append(f"line {number}: error: {exc}")
            continue
        except Exception as exc:  # noqa: BLE001 - a decoder tool must never print a traceback
            failures += 1
            out.append(f"line {number}: error: {type(exc).__name__}: {exc}")
            continue
        out.append(f"line {number}: {described[0]}")
        out.extend(described[1:])
    return out, failures


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--framing", type=click.Choice(_wire.FRAMINGS), default="none", show_default=True)
@click.option("--spec", "spec_name", type=click.Choice(_msg.SPEC_NAMES), default="pos", show_default=True)
@click.option("--tpdu/--no-tpdu", "has_tpdu", default=False, help="Frames carry a 5-byte TPDU.")
@click.argument("hex_messages", nargs=-1)
def main(framing: str, spec_name: str, has_tpdu: bool, hex_messages: tuple[str, ...]) -> None:
    """Decode hex messages (arguments, else one per line on stdin)."""
    lines: Iterable[str] = hex_messages if hex_messages else sys.stdin
    out, failures = dump_lines(lines, framing, spec_name, has_tpdu)
    for line in out:
        click.echo(line)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
