"""A real headless Chromium (Debian's `chromium`), driven over the DevTools protocol.

`--remote-debugging-pipe` speaks the protocol over file descriptors 3 (commands in) and 4
(answers and events out), each message JSON ended by a NUL byte: no websocket client, no
WebDriver and no download are needed, only the browser. Commands are blocking pipe I/O,
so the async methods run them on a worker thread (the served app shares the test's event
loop). Clicks and typing are real input events (`Input.*`), not scripted `.click()`.
"""

from __future__ import annotations

import base64
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio

CHROMIUM = shutil.which("chromium")
FLAGS = (
    "--headless",
    "--remote-debugging-pipe",
    "--no-sandbox",  # CI runs as root, where Chromium's sandbox refuses to start
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--disable-background-networking",  # network only to the app under test
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,900",
)


class BrowserError(Exception):
    """The browser answered a command with an error, threw in the page, or timed out."""


class Browser:
    """One page in a headless Chromium; `events` keeps every event the page reported."""

    def __init__(self, profile: Path) -> None:
        assert CHROMIUM is not None
        commands_read, self._commands = os.pipe()
        self._answers, answers_write = os.pipe()

        def as_fd_3_and_4() -> None:  # in the child, before exec
            os.dup2(commands_read, 3)
            os.dup2(answers_write, 4)

        assert min(commands_read, answers_write) > 4  # dup2 must not clobber its other end
        self._process = subprocess.Popen(
            [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            preexec_fn=as_fd_3_and_4,  # noqa: PLW1509 - only dup2, no locks taken
            pass_fds=(3, 4),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(commands_read)
        os.close(answers_write)
        self._buffer = b""
        self._next_id = 0
        self._session: str | None = None
        self.events: list[dict[str, Any]] = []

    def _send(self, method: str, params: dict[str, Any], session: str | None) -> dict[str, Any]:
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 20
        while True:
            while b"\0" in self._buffer:
                raw, _, self._buffer = self._buffer.partition(b"\0")
                answer: dict[str, Any] = json.loads(raw)
                if answer.get("id") != self._next_id:
                    self.events.append(answer)
                    continue
                if "error" in answer:
                    raise BrowserError(f"{method}: {answer['error']}")
                result: dict[str, Any] = answer["result"]
                return result
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._answers], [], [], left)[0]:
                raise BrowserError(f"{method}: no answer in 20 s")
            chunk = os.read(self._answers, 1 << 20)
            if not chunk:
                raise BrowserError(f"{method}: the browser exited")
            self._buffer += chunk

    async def command(self, method: str, **params: Any) -> dict[str, Any]:
        """A command to the page (or, before `open`, to the browser)."""
        return await anyio.to_thread.run_sync(lambda: self._send(method, params, self._session))

    async def open(self) -> None:
        """Attach to a fresh page and turn on the events the tests read."""
        target = await self.command("Target.createTarget", url="about:blank")
        attached = await self.command(
            "Target.attachToTarget", targetId=target["targetId"], flatten=True
        )
        self._session = attached["sessionId"]
        await self.command("Runtime.enable")
        await self.command("Log.enable")

    async def evaluate(self, expression: str) -> Any:
        """The JSON value of `expression` in the page (DevTools is not bound by its CSP)."""
        answer = await self.command(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, timeout: float = 10) -> Any:
        """The first truthy value of `expression`, polled."""
        deadline = time.monotonic() + timeout
        while not (value := await self.evaluate(expression)):
            if time.monotonic() > deadline:
                shown = await self.evaluate("document.body.innerText")
                raise BrowserError(f"still false after {timeout} s: {expression}\n{shown}")
            await anyio.sleep(0.05)
        return value

    async def goto(self, url: str) -> None:
        await self.command("Page.navigate", url=url)
        await self.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'"
        )

    async def click(self, selector: str) -> None:
        """A left click in the middle of the element, as a mouse would."""
        box = await self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)});"
            " el.scrollIntoView({block: 'center'}); const r = el.getBoundingClientRect();"
            " return [r.x + r.width / 2, r.y + r.height / 2]; })()"
        )
        for kind in ("mousePressed", "mouseReleased"):
            await self.command(
                "Input.dispatchMouseEvent",
                type=kind,
                x=box[0],
                y=box[1],
                button="left",
                clickCount=1,
            )

    async def type(self, selector: str, text: str) -> None:
        """Click into the field, then type `text` into it."""
        await self.click(selector)
        await self.command("Input.insertText", text=text)

    async def screenshot(self, path: Path) -> None:
        shot = await self.command("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))

    def close(self) -> None:
        self._process.kill()
        self._process.wait(10)
        os.close(self._commands)
        os.close(self._answers)


@asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[Browser]:
    """A running browser with one page open, killed at the end."""
    running = Browser(profile)
    try:
        await running.open()
        yield running
    finally:
        running.close()
