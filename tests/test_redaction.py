"""The redaction set: by value (and encoded forms), by key and by pattern."""

from __future__ import annotations

import base64
import urllib.parse

from pvemcp.secrets.redaction import MASK, Redactor

SECRET = "3a0c9d5e-7f21-4c1b-9d7e-5b6a2f8c1e44"


def test_value_and_its_encodings_are_masked() -> None:
    redactor = Redactor([SECRET])
    for form in (
        SECRET,
        base64.b64encode(SECRET.encode()).decode(),
        urllib.parse.quote(f"x={SECRET}&", safe=""),
    ):
        assert SECRET[:12] not in redactor.text(f"before {form} after")
        assert "before" in redactor.text(f"before {form} after")


def test_secret_keys_are_masked_but_token_ids_kept() -> None:
    redactor = Redactor()
    out = redactor.value(
        {"cipassword": "hunter22", "tokenid": "gw", "nested": [{"ticket": "PVE:abc"}], "n": 3}
    )
    assert out == {"cipassword": MASK, "tokenid": "gw", "nested": [{"ticket": MASK}], "n": 3}


def test_patterns() -> None:
    redactor = Redactor()
    samples = [
        "PVEAPIToken=root@pam!gw=1234-5678",
        "PVE:root@pam:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv",
        "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
        "hvs.CAESIJ3abcdefghijklmnopqrstu",
        "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----",
        "https://user:pa55word@host/path",
    ]
    for sample in samples:
        out = redactor.text(f"x {sample} y")
        assert MASK in out, sample
        assert "1234-5678" not in out and "pa55word" not in out and "b3BlbnNzaC1rZXk" not in out


def test_short_values_are_not_added() -> None:
    redactor = Redactor(["ab"])
    assert redactor.text("abc") == "abc"


def test_a_private_key_cut_off_by_a_cap_is_still_masked() -> None:
    cut = "log line\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAABG5v"
    out = Redactor().text(cut)
    assert out.startswith("log line\n")
    assert "b3BlbnNzaC1rZXk" not in out
    assert "AAAABG5v" not in out
