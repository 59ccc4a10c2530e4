"""UPID parsing: PVE's grammar exactly, nothing more, nothing less."""

from __future__ import annotations

import pytest

from pvemcp.proxmox.upid import Upid, is_upid, parse_upid


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "UPID:pve1:00213D37:01ECA9AD:618F6B8D:aptupdate::root@pam:",
            Upid("pve1", 0x213D37, 0x1ECA9AD, 0x618F6B8D, "aptupdate", "", "root@pam"),
        ),
        (
            "UPID:pve1:0000ABCD:1A2B3C4D5:65F0A1B2:qmstart:100:root@pam:",
            Upid("pve1", 0xABCD, 0x1A2B3C4D5, 0x65F0A1B2, "qmstart", "100", "root@pam"),
        ),
        (
            "UPID:node-2:0000abcd:0001e240:65f0a1b2:vzdump:101:backup@pbs:",
            Upid("node-2", 0xABCD, 0x1E240, 0x65F0A1B2, "vzdump", "101", "backup@pbs"),
        ),
        (
            "UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstop:100:pvemcp@pve!gateway:",
            Upid("pve1", 0xABCD, 0x1E240, 0x65F0A1B2, "qmstop", "100", "pvemcp@pve", "gateway"),
        ),
        (
            "UPID:pve1:0000ABCD:0001E240:65F0A1B2:download:local-iso.iso:root@pam:",
            Upid("pve1", 0xABCD, 0x1E240, 0x65F0A1B2, "download", "local-iso.iso", "root@pam"),
        ),
    ],
)
def test_parse_good(text: str, expected: Upid) -> None:
    upid = parse_upid(text)
    assert upid == expected
    assert str(upid).upper() == text.upper()
    assert parse_upid(str(upid)) == upid
    assert is_upid(text)


def test_canonical_form_is_upper_case_and_round_trips() -> None:
    upid = parse_upid("UPID:pve1:0000abcd:0001e240:65f0a1b2:qmstart:100:root@pam:")
    assert str(upid) == "UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:"
    assert parse_upid(str(upid)) == upid


def test_token_user_round_trips() -> None:
    text = "UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstop:100:pvemcp@pve!gateway:"
    upid = parse_upid(text)
    assert (upid.user, upid.tokenid) == ("pvemcp@pve", "gateway")
    assert str(upid) == text


def test_nine_digit_pstart_round_trips() -> None:
    text = "UPID:pve1:0000ABCD:1A2B3C4D5:65F0A1B2:qmstart:100:root@pam:"
    assert str(parse_upid(text)) == text


GOOD = "UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:"


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        (GOOD + "garbage", "must end with the colon"),
        (GOOD + "x:", "fields"),
        (GOOD[:-1], "must end with the colon"),
        (GOOD + "\n", "must end with the colon"),
        (" " + GOOD, "does not start with 'UPID:'"),
        ("upid:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:", "does not start"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:root@pam:", "fields"),
        ("UPID:pve_1:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:", "field node"),
        ("UPID:-pve:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:", "field node"),
        ("UPID::0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:", "field node"),
        ("UPID:pve1:ABCD:0001E240:65F0A1B2:qmstart:100:root@pam:", "field pid"),
        ("UPID:pve1:0000ABCG:0001E240:65F0A1B2:qmstart:100:root@pam:", "field pid"),
        ("UPID:pve1:0000ABCD:1E240:65F0A1B2:qmstart:100:root@pam:", "field pstart"),
        ("UPID:pve1:0000ABCD:01A2B3C4D5:65F0A1B2:qmstart:100:root@pam:", "field pstart"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B:qmstart:100:root@pam:", "field starttime"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2::100:root@pam:", "field type"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qm start:100:root@pam:", "field type"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:1/0:root@pam:", "field id"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:10\x000:root@pam:", "field id"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100::", "field user"),
        ("UPID:pve1:0000ABCD:0001E240:65F0A1B2:qmstart:100:root@pam!:", "token name"),
        ("", "does not start"),
        ("UPID:" + "a" * 600 + ":", "longer than"),
    ],
)
def test_parse_bad(text: str, complaint: str) -> None:
    with pytest.raises(ValueError, match="not a UPID") as info:
        parse_upid(text)
    assert complaint in str(info.value)
    assert not is_upid(text)


@pytest.mark.parametrize("value", [None, 42, b"UPID:", ["UPID:"]])
def test_is_upid_non_strings(value: object) -> None:
    assert not is_upid(value)
