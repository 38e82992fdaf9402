"""Headless Chromium driven over the DevTools protocol on a pipe (no extra packages).

Chromium is started with ``--remote-debugging-pipe``: it reads JSON commands, each ended
by a NUL byte, from file descriptor 3 and writes replies and events to descriptor 4.
The page's console messages, uncaught exceptions and log entries (CSP violations, failed
loads) are collected so tests can assert that there are none.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
EXTRA = ["--no-first-run", "--no-default-browser-check", "--disable-extensions", "--mute-audio", "--hide-scrollbars"]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class BrowserError(RuntimeError):
    pass


class Chromium:
    """One headless browser; ``open(url)`` gives a :class:`Page`."""

    def __init__(self, binary: str | None = None, timeout: float = 60.0):
        self.binary = binary or find_chromium()
        if not self.binary:
            raise BrowserError("no Chromium found: install Debian's chromium package (apt-get install chromium)")
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="poisonscan-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # Chromium expects the pipe ends on descriptors 3 and 4; move them out of the way
        # first so the dup2 calls in the child cannot overwrite one another
        high_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        high_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)
        to_child_r, from_child_w = high_r, high_w

        def onto_3_and_4():
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        args = [self.binary, *FLAGS, *EXTRA, "--remote-debugging-pipe",
                f"--user-data-dir={self.profile}", "about:blank"]
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=onto_3_and_4, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        os.close(to_child_r)
        os.close(from_child_w)
        self._next = 0
        self._lock = threading.Lock()
        self._replies: dict[int, queue.Queue] = {}
        self.events: queue.Queue = queue.Queue()
        self._stderr: list[bytes] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._drain_stderr, daemon=True).start()
        self.call("Browser.getVersion")

    def _drain_stderr(self):
        for line in self.proc.stderr:
            self._stderr.append(line)

    def _read(self):
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                break
            if not chunk:
                break
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                if "id" in msg:
                    q = self._replies.get(msg["id"])
                    if q is not None:
                        q.put(msg)
                else:
                    self.events.put(msg)

    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        with self._lock:
            self._next += 1
            cid = self._next
            q: queue.Queue = queue.Queue()
            self._replies[cid] = q
        msg = {"id": cid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        try:
            reply = q.get(timeout=self.timeout)
        except queue.Empty:
            raise BrowserError(f"no reply to {method} within {self.timeout} s; chromium said: "
                               + b"".join(self._stderr[-20:]).decode(errors="replace")) from None
        finally:
            self._replies.pop(cid, None)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error']}")
        return reply.get("result", {})

    def open(self, url: str, width: int = 1280, height: int = 900) -> "Page":
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        page = Page(self, session, target)
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False}, session=session)
        page.navigate(url)
        return page

    def close(self):
        try:
            self.call("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class Page:
    def __init__(self, browser: Chromium, session: str, target: str):
        self.browser = browser
        self.session = session
        self.target = target
        self.problems: list[str] = []  # console errors, exceptions, log errors
        self.messages: list[str] = []  # every console message

    def _pump(self, until=None, timeout: float = 30.0) -> dict | None:
        """Collect events for this page; return the first one ``until`` accepts."""
        end = time.time() + timeout
        while True:
            left = end - time.time()
            if left <= 0:
                return None
            try:
                ev = self.browser.events.get(timeout=min(left, 0.2))
            except queue.Empty:
                if until is None:
                    return None
                continue
            if ev.get("sessionId") != self.session:
                continue
            method, params = ev.get("method"), ev.get("params", {})
            if method == "Runtime.consoleAPICalled":
                text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
                self.messages.append(f"{params.get('type')}: {text}")
                if params.get("type") in ("error", "assert", "warning"):
                    self.problems.append(f"console.{params.get('type')}: {text}")
            elif method == "Runtime.exceptionThrown":
                d = params.get("exceptionDetails", {})
                self.problems.append("exception: " + str(d.get("exception", {}).get("description") or d.get("text")))
            elif method == "Log.entryAdded":
                e = params.get("entry", {})
                self.messages.append(f"log {e.get('level')}: {e.get('text')}")
                if e.get("level") in ("error", "warning"):
                    self.problems.append(f"log {e.get('level')} ({e.get('source')}): {e.get('text')}")
            if until is not None and until(method, params):
                return ev

    def navigate(self, url: str, timeout: float = 60.0) -> None:
        self.browser.call("Page.navigate", {"url": url}, session=self.session)
        if self._pump(lambda m, p: m == "Page.loadEventFired", timeout) is None:
            raise BrowserError(f"{url} did not finish loading within {timeout} s")
        self.settle()

    def close(self) -> None:
        self.browser.call("Target.closeTarget", {"targetId": self.target})

    def settle(self, seconds: float = 0.3) -> None:
        """Let pending events (late console messages) arrive."""
        self._pump(None, seconds)

    def eval(self, expression: str):
        r = self.browser.call(
            "Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True},
            session=self.session,
        )
        if "exceptionDetails" in r:
            raise BrowserError(f"{expression!r} raised: {r['exceptionDetails']}")
        return r.get("result", {}).get("value")

    def click(self, selector: str) -> None:
        self.eval(f"document.querySelector({json.dumps(selector)}).click()")
        self.settle(0.1)

    def download(self, selector: str, folder: str, name: str, timeout: float = 10.0) -> str:
        """Click ``selector`` and wait for the file ``name`` it downloads into ``folder``."""
        os.makedirs(folder, exist_ok=True)
        self.browser.call("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(folder)})
        self.click(selector)
        target = os.path.join(folder, name)
        end = time.time() + timeout
        while not (os.path.exists(target) and os.path.getsize(target)):
            if time.time() > end:
                raise BrowserError(f"{name} was not downloaded within {timeout} s")
            time.sleep(0.1)
        return target

    def screenshot(self, path: str, full_page: bool = True, max_height: int = 16000, clip=None) -> None:
        """A PNG of the page (up to ``max_height`` px), the viewport, or ``clip`` =
        (x, y, width, height) in page coordinates."""
        params: dict = {"format": "png"}
        if clip is not None:
            x, y, w, h = clip
            params["clip"] = {"x": x, "y": y, "width": w, "height": h, "scale": 1}
            params["captureBeyondViewport"] = True
        elif full_page:
            metrics = self.browser.call("Page.getLayoutMetrics", session=self.session)
            size = metrics.get("cssContentSize") or metrics.get("contentSize")
            height = min(size["height"], max_height)
            params["clip"] = {"x": 0, "y": 0, "width": size["width"], "height": height, "scale": 1}
            params["captureBeyondViewport"] = True
        data = self.browser.call("Page.captureScreenshot", params, session=self.session)["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))
