"""Notifications over HTTPS: the built-in sendmail endpoint and matcher, endpoints of
every type whose secrets no GET returns, matchers naming targets, and a test that is
recorded, never sent."""

from __future__ import annotations

import httpx2
import pytest

from pvemcp.simulator.server import SimulatorHandle

from .conftest import client_for, get_data

pytestmark = pytest.mark.anyio


async def test_the_builtin_endpoint_and_matcher(client: httpx2.AsyncClient) -> None:
    targets = await get_data(client, "/cluster/notifications/targets")
    assert [(t["name"], t["type"], t["origin"]) for t in targets] == [
        ("mail-to-root", "sendmail", "builtin")
    ]
    [matcher] = await get_data(client, "/cluster/notifications/matchers")
    assert (matcher["name"], matcher["target"], matcher["mode"]) == (
        "default-matcher", ["mail-to-root"], "all",
    )  # fmt: skip
    sendmail = await get_data(client, "/cluster/notifications/endpoints/sendmail/mail-to-root")
    assert sendmail["mailto-user"] == ["root@pam"] and len(sendmail["digest"]) == 64


async def test_secrets_are_never_answered(fresh_client: httpx2.AsyncClient) -> None:
    client = fresh_client
    base = "/cluster/notifications/endpoints"
    made = [
        await client.post(f"{base}/gotify", data={"name": "phone", "server": "https://g.example",
                                                    "token": "s3cr3t-token"}),
        await client.post(f"{base}/smtp", data={"name": "relay", "server": "mail.example",
                                                  "from-address": "pve@example.com",
                                                  "username": "pve", "password": "s3cr3t-pw",
                                                  "mailto": ["ops@example.com"]}),
        await client.post(f"{base}/webhook", data={"name": "chat", "method": "post",
                                                     "url": "https://chat.example/{{ secrets.k }}",
                                                     "secret": ["name=k,value=czNjcjN0"]}),
    ]  # fmt: skip
    assert [r.status_code for r in made] == [200, 200, 200], [r.text for r in made]
    for kind, name in (("gotify", "phone"), ("smtp", "relay"), ("webhook", "chat")):
        listed = (await client.get(f"{base}/{kind}")).text
        one = (await client.get(f"{base}/{kind}/{name}")).text
        for shown in (listed, one):
            assert "s3cr3t" not in shown and "czNjcjN0" not in shown
    chat = await get_data(client, f"{base}/webhook/chat")
    assert chat["secret"] == ["name=k"]
    # A PUT naming a secret without its value keeps the value; the answer still hides it.
    kept = await client.put(f"{base}/webhook/chat", data={"secret": ["name=k"], "comment": "c"})
    assert kept.status_code == 200, kept.text
    targets = await get_data(client, "/cluster/notifications/targets")
    assert sorted(t["name"] for t in targets) == ["chat", "mail-to-root", "phone", "relay"]


async def test_refusals(fresh_client: httpx2.AsyncClient) -> None:
    client = fresh_client
    base = "/cluster/notifications"
    twice = await client.post(
        f"{base}/endpoints/sendmail", data={"name": "mail-to-root", "mailto": ["a@b.c"]}
    )
    assert twice.status_code == 400
    assert "already exists" in twice.json()["message"]
    missing = await client.get(f"{base}/endpoints/gotify/mail-to-root")
    assert missing.status_code == 404
    bad_target = await client.post(f"{base}/matchers", data={"name": "pager", "target": ["nope"]})
    assert bad_target.status_code == 400
    assert bad_target.json()["message"] == "target 'nope' does not exist\n"
    used = await client.delete(f"{base}/endpoints/sendmail/mail-to-root")
    assert used.status_code == 400
    assert (
        used.json()["message"] == "cannot delete 'mail-to-root', referenced by: default-matcher\n"
    )
    stale = await client.put(f"{base}/matchers/default-matcher",
                             data={"comment": "x", "digest": "0" * 64})  # fmt: skip
    assert stale.status_code == 500


async def test_a_test_is_recorded_not_sent(fresh_sim: SimulatorHandle) -> None:
    async with client_for(fresh_sim) as client:
        sent = await client.post("/cluster/notifications/targets/mail-to-root/test")
        assert sent.status_code == 200, sent.text
        unknown = await client.post("/cluster/notifications/targets/nope/test")
        assert unknown.status_code == 404
    [record] = fresh_sim.state.notify.sent
    assert (record["target"], record["type"]) == ("mail-to-root", "sendmail")
