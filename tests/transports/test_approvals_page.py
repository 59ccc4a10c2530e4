"""The approvals web page in a real headless Chromium, against a real uvicorn and real JWTs.

The app, the test issuer and the held requests are those of `test_approvals_http.py`:
Alice's call is held, Bob (group `secops`) is a named approver. The browser loads
`/approvals/ui`, a token is typed into it, and every decision goes through the HTTP API
the page calls, with the page's strict CSP in force.
"""

from __future__ import annotations

import json
from pathlib import Path

import httpx2
import pytest

from pvemcp.gateway.invoke import Gateway
from pvemcp.transports.approvals_page import CONTENT_SECURITY_POLICY
from tests.support.browser import CHROMIUM, Browser, browser
from tests.support.oidc import TestIssuer
from tests.transports.test_approvals_http import (  # noqa: F401 - fixtures
    BINDING,
    Api,
    clock,
    gateway,
    issuer,
    serving,
    sim,
)

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.skipif(
        CHROMIUM is None,
        reason="Debian's chromium is not installed (scripts/bootstrap --test installs it)",
    ),
]

PROBLEMS = ("Runtime.exceptionThrown", "Log.entryAdded")
HOSTILE = '<script>window.pwned = 1</script><img src="x" onerror="window.pwned = 2">'


async def signed_in(page: Browser, api: Api, token: str) -> None:
    """Load the page and type `token` into it, as an approver would."""
    await page.goto(api.base + "/approvals/ui")
    await page.type("#token", token)
    await page.click("#login button[type=submit]")


async def opened(page: Browser, row: str) -> str:
    """Click the row's Show button; the plan the detail then shows, as text."""
    await page.click(f"{row} button")
    plan: str = await page.wait_for(
        "!document.querySelector('#detail').hidden && document.querySelector('#plan').textContent"
    )
    return plan


async def test_an_approver_approves_on_the_page(
    gateway: Gateway,  # noqa: F811
    issuer: TestIssuer,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with serving(gateway, issuer) as api, browser(tmp_path / "profile") as page:
        held = api.hold("alice")
        bob = api.token("bob", "secops")
        await signed_in(page, api, bob)
        row = f"#rows tr[data-id={json.dumps(held.id)}]"
        cells = await page.wait_for(
            f"[...(document.querySelector({json.dumps(row)})?.cells ?? [])]"
            ".map(cell => cell.textContent)"
        )
        assert cells[:5] == [
            "proxmox_shell_run",
            "demo",
            'node="pve1"',
            "run `uptime` on pve1",
            "alice",
        ]
        assert "min)" in cells[5]
        # The token is in the page's memory only: not in the field, storage, cookies or URL.
        kept = await page.evaluate(
            "[document.querySelector('#token').value, JSON.stringify(localStorage),"
            " JSON.stringify(sessionStorage), document.cookie, location.href].join(' ')"
        )
        assert bob not in kept

        plan = await opened(page, row)
        assert json.loads(plan) == held.plan
        await page.screenshot(tmp_path / "approvals-page.png")
        await page.type("#reason", "change 42")
        await page.click("#approve")
        outcome = await page.wait_for("document.querySelector('#outcome').textContent")
        assert outcome == "approved by bob: change 42"
        assert await page.wait_for("document.querySelector('#empty').hidden === false")

        decided = api.store.get(held.id)
        assert (decided.status, decided.reason) == ("approved", "change 42")
        assert decided.decided_by is not None and decided.decided_by["sub"] == "bob"
        # Nothing threw, and the page needed nothing its CSP refuses.
        reported = [e["params"] for e in page.events if e.get("method") in PROBLEMS]
        assert reported == []
    assert (tmp_path / "approvals-page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


async def test_markup_in_a_plan_is_text_and_the_page_is_locked_down(
    gateway: Gateway,  # noqa: F811
    issuer: TestIssuer,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with serving(gateway, issuer) as api, browser(tmp_path / "profile") as page:
        held = api.store.create(
            tool="proxmox_shell_run",
            cluster="demo",
            binding=BINDING,
            plan={"summary": HOSTILE, "target": {"node": HOSTILE}},
            arguments={"node": "pve1", "command": "uptime"},
            requester=api.principal("alice"),
            approvers=["group:secops"],
            rule_ids=["shell-approve"],
        )
        # The page itself needs no token, and each of its files carries the strict CSP.
        async with httpx2.AsyncClient() as http:
            for path, kind in (("", "text/html"), (".js", "text/javascript"), (".css", "text/css")):
                served = await http.get(f"{api.base}/approvals/ui{path}")
                assert served.status_code == 200, served.text
                assert served.headers["content-type"].startswith(kind)
                assert served.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
                assert served.headers["x-content-type-options"] == "nosniff"
        assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY

        await signed_in(page, api, api.token("bob", "secops"))
        row = f"#rows tr[data-id={json.dumps(held.id)}]"
        await page.wait_for(f"document.querySelector({json.dumps(row)}) !== null")
        plan = await opened(page, row)
        assert json.loads(plan)["summary"] == HOSTILE
        shown = await page.evaluate(
            "({row: document.querySelector('#rows td.plan').textContent,"
            " markup: document.querySelectorAll('main script, main img').length,"
            " ran: typeof window.pwned})"
        )
        assert shown == {"row": HOSTILE, "markup": 0, "ran": "undefined"}


async def test_the_requester_cannot_approve_and_an_approver_denies(
    gateway: Gateway,  # noqa: F811
    issuer: TestIssuer,  # noqa: F811
    tmp_path: Path,
) -> None:
    async with serving(gateway, issuer) as api, browser(tmp_path / "profile") as page:
        held = api.hold("alice")
        await signed_in(page, api, "not-a-token")
        refused = await page.wait_for("document.querySelector('#error').textContent")
        assert refused.startswith("invalid_token: ")

        await signed_in(page, api, api.token("alice"))
        row = f"#rows tr[data-id={json.dumps(held.id)}]"
        await page.wait_for(f"document.querySelector({json.dumps(row)}) !== null")
        await opened(page, row)
        await page.type("#reason", "my own change")
        await page.click("#approve")
        shown = await page.wait_for("document.querySelector('#error').textContent")
        assert shown.startswith("approval_self: ")
        assert await page.evaluate("document.querySelector('#outcome').textContent") == ""
        assert api.store.get(held.id).status == "pending"

        # "Forget token" drops Alice's; Bob, typed in next, denies it.
        await page.click("#forget")
        assert await page.evaluate("document.querySelector('#pending').hidden")
        await signed_in(page, api, api.token("bob", "secops"))
        await page.wait_for(f"document.querySelector({json.dumps(row)}) !== null")
        await opened(page, row)
        await page.type("#reason", "not during business hours")
        await page.click("#deny")
        outcome = await page.wait_for("document.querySelector('#outcome').textContent")
        assert outcome == "denied by bob: not during business hours"
        assert await page.evaluate("document.querySelector('#error').hidden")
        assert api.store.get(held.id).status == "denied"
