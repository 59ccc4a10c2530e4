"""The redaction pre-check skips only work that would change nothing.

`Redactor.text` returns text untouched when `_may_hold_secret` finds no secret value and
no pattern's `needs`; otherwise it runs every substitution as before. These tests hold it
to the plain substitution loop (the implementation before the pre-check) on texts built
from every pattern's trigger, cut-off and look-alike forms, Unicode case variants,
secret values in all their encodings, and random text, short and long.
"""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pvemcp.secrets import redaction
from pvemcp.secrets.redaction import _LONG_TEXT, _PATTERNS, MASK, Redactor, _forms, _Rule


def reference(redactor: Redactor, text: str) -> str:
    """`Redactor.text` before the pre-check: every substitution, always."""
    regex = redactor._regex
    if regex is not None:
        text = regex.sub(MASK, text)
    for pattern, replacement, _ in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


SECRETS = ["3a0c9d5e-7f21-4c1b-9d7e-5b6a2f8c1e44", "hunter22!", "p@ss w/rd+ü", "s3cr3t-Ωmega"]
PEM = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk\n-----END OPENSSH PRIVATE KEY-----"
FRAGMENTS = [
    # PVE API token headers and tickets.
    "PVEAPIToken=root@pam!gw=1234-5678",
    "PVEAPIToken=",
    "PVEAPIToken",
    "PVE:root@pam:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv",
    "PVE:root@pam:4EEC61E2::",
    "PVE:",
    "pve:root@pam:4EEC61E2::abc",
    # JWTs and near misses.
    "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl",
    "eyJhbGciOiJFUzI1NiJ9",
    ".eyJ",
    "eyJ",
    "eyJabcd.eyJ",
    # Vault and OpenBao tokens, new and legacy, and look-alikes.
    "hvs.CAESIJ3abcdefghijklmnopqrstu",
    "hvb.AAAAAQJ3abcdefghijklmnopqrs",
    "hvr.short",
    "hvs.",
    "s.Abcdefghijklmnopqrstuvwx",
    "b.0123456789abcdefghijklmn",
    "r.ABCDEFGHIJKLMNOPQRSTUVWX",
    "xs.Abcdefghijklmnopqrstuvwx",
    "s.Abcdefghijklmnopqrstuvwxy",
    "s.",
    ".",
    "x-vault-token: abc123",
    "X-Vault-Token=abc",
    "X-VAULT-TOKEN :\tq",
    "x-vault-to\u212aen: kelvin",  # KELVIN SIGN matches k case-insensitively
    "x-vault-token",
    # Private keys, whole and cut off by an output cap.
    PEM,
    "-----BEGIN RSA PRIVATE KEY-----\nMIIE",
    "-----BEGIN PRIVATE KEY-----",
    "-----END PRIVATE KEY-----",
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
    "PRIVATE KEY-----",
    # Headers, with ASCII and non-ASCII case variants.
    "Authorization: Bearer abc.def",
    "authorization:basic Zm9vOmJhcg==",
    "COOKIE : sid=1; theme=dark",
    "cookie",
    "author\u0130zation: dotted capital I",
    "author\u0131zation: dotless i",
    "coo\u212aie: kelvin",
    "Set-Cookie: a=b",
    # URLs with and without credentials.
    "https://user:pa55word@host/path",
    "HTTP://u:p@h",
    "https://pve1:8006/api2/json",
    "ftp://a:b@c",
    "://",
    "user:pass@host",
]
SEPARATORS = [" ", "\n", "\r\n", "\t", ".", ":", "=", "@", "/", ",", ";", '"', "'", "-", "_", ""]
ALPHABET = st.sampled_from(
    "aAeEsSbBrRkKiIhHvVpP.:=@/- \n\u0130\u0131\u212a\u017fü😀"
) | st.characters(codec="utf-8")


@st.composite
def cases(draw: st.DrawFn) -> tuple[list[str], str]:
    """Secret values for a redactor, and a text made of triggers, those values in their
    encoded forms, separators, random text and (sometimes) padding past `_LONG_TEXT`."""
    secrets = draw(st.lists(st.sampled_from(SECRETS), max_size=3, unique=True))
    forms = sorted({form for secret in secrets for form in _forms(secret)})
    pieces = [
        st.sampled_from(FRAGMENTS),
        st.sampled_from(SEPARATORS),
        st.text(ALPHABET, max_size=12),
        st.integers(0, 2 * _LONG_TEXT).map(lambda n: "x " * n),
    ]
    if forms:
        pieces.append(st.sampled_from(forms))
    parts = draw(st.lists(st.one_of(pieces), max_size=10))
    return secrets, "".join(parts)


@settings(max_examples=1500, deadline=None)
@given(cases())
@example(([], "x-vault-to\u212aen: kelvin"))
@example(([], "coo\u212aie: a=b"))
@example(([], "ÿ author\u0130zation: x"))
@example((["hunter22!"], "aHVudGVyMjIh"))
@example(([], "x " * _LONG_TEXT + "s.Abcdefghijklmnopqrstuvwx"))
def test_text_equals_the_plain_substitution_loop(case: tuple[list[str], str]) -> None:
    secrets, text = case
    redactor = Redactor(secrets)
    assert redactor.text(text) == reference(redactor, text)
    # Stronger, for diagnosis: the pre-check fires wherever any substitution could act.
    if any(rule.pattern.search(text) for rule in _PATTERNS) or (
        redactor._regex is not None and redactor._regex.search(text)
    ):
        assert redaction._may_hold_secret(text, redactor._regex)


@pytest.mark.parametrize("rule", _PATTERNS, ids=lambda rule: rule.pattern.pattern[:30])
@settings(max_examples=150, deadline=None)
@given(data=st.data())
def test_every_match_of_a_pattern_passes_the_precheck(rule: _Rule, data: st.DataObject) -> None:
    """`needs` is a necessary condition: anything a pattern matches in, short or long."""
    text = data.draw(st.from_regex(rule.pattern))
    padding = data.draw(st.sampled_from(["", "x " * _LONG_TEXT]))
    for sample in (text, padding + text, text + padding):
        if rule.pattern.search(sample):
            assert redaction._may_hold_secret(sample, None), sample


@pytest.mark.parametrize(
    "text",
    [
        "x PVEAPIToken=root@pam!gw=1234-5678 y",
        "ticket PVE:root@pam:4EEC61E2::rsKoApxDTLYPn6H3NNT6iP2mv",
        "jwt eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2lnbmF0dXJl end",
        "token hvs.CAESIJ3abcdefghijklmnopqrstu",
        "legacy s.Abcdefghijklmnopqrstuvwx here",
        "X-Vault-Token: abc123",
        "x-vault-to\u212aen=abc123",
        f"key {PEM} after",
        "log\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\nAAAABG5v",
        "Authorization: Bearer abc",
        "Cookie: sid=1",
        "author\u0131zation: dotless",
        "see https://user:pa55word@host/path",
        "x " * _LONG_TEXT + "PVEAPIToken=a " + "y " * _LONG_TEXT,
        "\u00e9 " * _LONG_TEXT + "COOKIE: k",
    ],
)
def test_each_pattern_is_still_masked(text: str) -> None:
    redactor = Redactor()
    out = redactor.text(text)
    assert MASK in out
    assert out == reference(redactor, text)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "running",
        "local-lvm:vm-101-disk-0",
        "eyJhbGciOiJFUzI1NiJ9 alone",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----",
        "s.short and file.conf and 10.0.0.1",
        "x " * 3 * _LONG_TEXT,
        "n\u00e4me: caf\u00e9 " * _LONG_TEXT,
    ],
)
def test_clean_text_skips_the_substitutions(text: str) -> None:
    redactor = Redactor(SECRETS)
    assert not redaction._may_hold_secret(text, redactor._regex)
    assert redactor.text(text) is text


def test_secret_values_added_later_are_found() -> None:
    redactor = Redactor()
    text = "value s3cr3t-Ωmega here"
    assert redactor.text(text) is text
    redactor.add("s3cr3t-Ωmega")
    assert redactor.text(text) == f"value {MASK} here"


def test_case_insensitive_needs_must_be_plain_words() -> None:
    """The ASCII shortcut compares lower-cased text with `needs` words: a regex or an
    upper-case letter there would make the pre-check unsound, so it is refused."""
    caseless = re.compile("(?i)secret")
    for needs in ("Secret", r"secr\w+", "se(c)ret"):
        with pytest.raises(ValueError, match="lower-case words"):
            redaction._build_needs((_Rule(caseless, MASK, needs),))
    built = redaction._build_needs((_Rule(caseless, MASK, "secret|x-token"),))
    assert built.words == ("secret", "x-token")
