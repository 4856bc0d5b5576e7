"""What the chaos suite's fuzzing found, pinned as tests (expected to fail until fixed).

Two reversals sent back to back under one key (same 41, 11 and 7) with different field 90,
both naming originals the switch never saw: a duplicate transmission with different content
should be answered 94 and post nothing. Both are answered 25 instead, and the second one's
marker journal (posted under its original's key) is left without a stored response: its
receipt, inserted ON CONFLICT DO NOTHING under the key the first one's receipt already holds,
is dropped, and `switchd recon run` fails `journal_has_one_request`. With a small pool, the
requests that follow time out on the database (96), then go unanswered.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures_daemon import (
    CMAC_KEY_HEX,
    POS_LISTENER,
    Daemon,
    decode,
    next_stan,
    purchase,
    signed_on,
    utc_stamp,
)

MID, TID, CARD = "MCHF1", "TCHF0001", "6212345000000075"
MAC = ("cmac-aes", CMAC_KEY_HEX)

pytestmark = pytest.mark.e2e


@pytest.mark.xfail(strict=True, reason="one key, two reversals decided concurrently: both 25, an orphan marker")
def test_two_reversals_under_one_key_back_to_back(db_dsn: str, tmp_path: Path) -> None:
    d = Daemon(tmp_path, db_dsn, [POS_LISTENER]).start()
    try:
        d.provision("CHF", MID, [TID], [CARD])
        with signed_on(d.ports["pos"], TID) as t:
            now = utc_stamp()
            base = {**purchase(TID, MID, pan=CARD, amount=1_000, stan=next_stan(), when=now), "t": "0400"}
            for original_stan in (next_stan(), next_stan()):
                t.send({**base, "90": "0200" + original_stan + now + "0" * 22}, mac=MAC)
            codes = sorted(decode(t.recv_raw(), "pos")["39"] for _ in range(2))
            t.send(purchase(TID, MID, pan=CARD, amount=1_000), mac=MAC)
            after = decode(t.recv_raw(), "pos")["39"]
        recon = d.cli("recon", "run", check=False)
    finally:
        d.stop()
    assert (recon.returncode, codes, after) == (0, ["25", "94"], "00"), recon.stdout
