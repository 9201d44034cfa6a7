"""Headless Debian Chromium driven over the DevTools protocol (a websocket), for the Web UI test.

Flags per the machine notes: no sandbox (root), no GPU, and no background networking (this machine's
closed network refuses Chromium's own connections), with a new empty profile.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import websockets

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]

VISIBLE_TEXT = """(() => {
  const frames = [...document.querySelectorAll('iframe')].map(f => {
    try { return f.contentDocument && f.contentDocument.body ? f.contentDocument.body.innerText : ''; }
    catch (e) { return ''; }
  });
  return [document.body ? document.body.innerText : '', ...frames].join('\\n');
})()"""
CLICK_TEXT = """(() => {
  const el = [...document.querySelectorAll('a, button, [role=tab]')].find(e => e.innerText.trim() === %s);
  if (el) { el.click(); return true; }
  return false;
})()"""


def chromium_binary() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Page:
    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self._ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        call_id = next(self._ids)
        await self._socket.send(json.dumps({"id": call_id, "method": method, "params": params}))
        while True:
            message = json.loads(await self._socket.recv())
            if message.get("id") == call_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                result: dict[str, Any] = message.get("result", {})
                return result

    async def text(self) -> str:
        """The page's visible text, with that of its same-origin iframes (the Web UI renders Markdown,
        such as a workflow's current details, in iframes)."""
        result = await self.call("Runtime.evaluate", expression=VISIBLE_TEXT)
        return str(result.get("result", {}).get("value", ""))

    async def click_text(self, label: str) -> bool:
        """Click the first link, button or tab whose text is exactly `label`."""
        result = await self.call("Runtime.evaluate", expression=CLICK_TEXT % json.dumps(label))
        return bool(result.get("result", {}).get("value"))

    async def wait_for_text(self, needle: str, timeout: float = 30) -> str:
        deadline = time.monotonic() + timeout
        text = ""
        while time.monotonic() < deadline:
            text = await self.text()
            if needle in text:
                return text
            await asyncio.sleep(0.5)
        raise AssertionError(f"{needle!r} never showed; the page says:\n{text[:3000]}")

    async def screenshot(self, path: Path) -> None:
        shot = await self.call("Page.captureScreenshot", format="png")
        path.write_bytes(base64.b64decode(shot["data"]))


@contextlib.asynccontextmanager
async def open_page(url: str, profile: Path, port: int, size: str = "1440,1000") -> AsyncIterator[Page]:
    binary = chromium_binary()
    assert binary is not None
    process = subprocess.Popen(
        [
            binary,
            *FLAGS,
            f"--user-data-dir={profile}",
            f"--remote-debugging-port={port}",
            f"--window-size={size}",
            "about:blank",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        target = await _page_target(port)
        async with websockets.connect(target, max_size=64 * 1024 * 1024) as socket:
            page = Page(socket)
            await page.call("Page.enable")
            await page.call("Page.navigate", url=url)
            yield page
    finally:
        process.terminate()
        process.wait(10)


async def _page_target(port: int, timeout: float = 20) -> str:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient() as http:
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
                pages = [t for t in targets if t.get("type") == "page"]
                if pages:
                    return str(pages[0]["webSocketDebuggerUrl"])
            await asyncio.sleep(0.2)
    raise AssertionError("chromium did not open its DevTools port")
