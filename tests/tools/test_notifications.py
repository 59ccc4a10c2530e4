"""The notification tools end to end: the MCP SDK client, the gateway and a fresh simulator.

Issue 12's notifications scenario (list the targets and matchers, test the sendmail
target) and secrets that never reach a result.
"""

from __future__ import annotations

import json

import pytest

from tests.tools.calls import call, ok, refused
from tests.tools.test_examples import Session

pytestmark = pytest.mark.anyio


async def test_scenario_list_then_test_the_sendmail_target(session: Session) -> None:
    listed = ok(await call(session, "proxmox_notification_list"))
    assert listed["endpoints"] == [{"name": "mail-to-root", "type": "sendmail",
                                    "origin": "builtin",
                                    "comment": "Send mails to root@pam's email address",
                                    "sends_to": {"mailto-user": ["root@pam"]}}]  # fmt: skip
    [matcher] = listed["matchers"]
    assert (matcher["name"], matcher["targets"], matcher["mode"]) == (
        "default-matcher", ["mail-to-root"], "all",
    )  # fmt: skip

    tested = ok(await call(session, "proxmox_notification_test", target="mail-to-root"))
    assert tested["summary"] == "sent a test notification through sendmail target mail-to-root"
    assert session.writes() == ["POST /cluster/notifications/targets/mail-to-root/test"]
    [record] = session.sim.state.notify.sent
    assert record["target"] == "mail-to-root"


async def test_secrets_never_reach_a_result(session: Session) -> None:
    session.sim.state.notify.endpoints["phone"] = {
        "type": "gotify", "origin": "user-created", "server": "https://gotify.example",
        "token": "s3cr3t-token",
    }  # fmt: skip
    session.sim.state.notify.endpoints["chat"] = {
        "type": "webhook", "origin": "user-created", "url": "https://chat.example/x",
        "method": "post", "secret": ["name=key,value=czNjcjN0"],
    }  # fmt: skip
    result = await call(session, "proxmox_notification_list")
    text = json.dumps(ok(result)) + "".join(getattr(c, "text", "") for c in result.content)
    assert "s3cr3t" not in text and "czNjcjN0" not in text
    rows = {e["name"]: e for e in ok(result)["endpoints"]}
    assert rows["phone"]["sends_to"] == {"server": "https://gotify.example"}
    assert rows["chat"]["sends_to"] == {"url": "https://chat.example/x", "method": "post"}


async def test_an_unknown_target_is_refused_naming_it(session: Session) -> None:
    error = refused(await call(session, "proxmox_notification_test", target="pager"))
    assert (error["code"], error["field"]) == ("not_found", "target")
    assert "mail-to-root" in error["hint"]
    assert session.writes() == []
