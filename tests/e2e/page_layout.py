#!/usr/bin/env python3
"""Load a page in headless Chromium at given window widths and report its
layout, for check_admin's status-page stories.

usage: page_layout.py CHROMIUM URL PROFILE_DIR WIDTH[:SCREENSHOT.png]...

It drives the browser over the DevTools protocol on a pipe
(--remote-debugging-pipe: commands on fd 3, answers on fd 4, each message
JSON ended by a NUL), so nothing is injected into the page and its
Content-Security-Policy stays as served. After the page's own script has
drawn it (the upstream rows are there, or 8 s passed), it prints one JSON
object a line, for each width in turn: the viewport width, the document's scroll width, how many rows,
how a row is displayed (table-row, or block for a phone's cards), the
elements whose box reaches past the viewport, and the page's header text;
with SCREENSHOT, the page is saved there as PNG (a phone's: its top
1600 pixels). Every wait is
bounded; exit 0 when it reported, 2 on a browser or protocol failure.
"""
import base64
import fcntl
import json
import os
import subprocess
import sys
import time

MEASURE = r"""
(function () {
  var vw = document.documentElement.clientWidth, wide = [];
  Array.prototype.forEach.call(document.querySelectorAll("body *"),
    function (e) {
      var r = e.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) return;
      if (r.right > vw + 0.5 || r.left < -0.5)
        wide.push(e.tagName.toLowerCase() + (e.id ? "#" + e.id : "") +
          (e.className && typeof e.className === "string" ?
            "." + e.className.split(" ").join(".") : "") +
          " " + Math.round(r.left) + ".." + Math.round(r.right));
    });
  var row = document.querySelector("tr[data-upstream]");
  return JSON.stringify({
    viewport: vw,
    scroll_width: document.documentElement.scrollWidth,
    height: document.documentElement.scrollHeight,
    rows: document.querySelectorAll("tr[data-upstream]").length,
    row_display: row ? getComputedStyle(row).display : null,
    wider: wide.slice(0, 20),
    meta: document.getElementById("meta").textContent,
    token_button_hidden: document.getElementById("token").hidden,
    text: document.body.innerText
  });
})()
"""


class Browser:
    """One headless Chromium and its DevTools pipe."""

    def __init__(self, chromium, profile):
        to_child_r, self.to_child = os.pipe()
        self.from_child, from_child_w = os.pipe()

        def fds():
            # Out of the way first, so that neither lands on the other.
            r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
            w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)
            os.dup2(r, 3)
            os.dup2(w, 4)

        self.proc = subprocess.Popen(
            [chromium, "--headless", "--no-sandbox", "--disable-gpu",
             "--disable-quic", "--no-first-run", "--hide-scrollbars",
             "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--user-data-dir=" + profile,
             "--remote-debugging-pipe", "about:blank"],
            close_fds=False, preexec_fn=fds,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        os.close(to_child_r)
        os.close(from_child_w)
        self.buf = b""
        self.next_id = 0
        self.events = []

    def send(self, method, params=None, session=None, timeout=20.0):
        """Send one command and return its result (events are kept)."""
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            m = self.read(deadline)
            if m.get("id") == self.next_id:
                if "error" in m:
                    raise RuntimeError("%s: %s" % (method, m["error"]))
                return m.get("result", {})
            self.events.append(m)

    def read(self, deadline):
        """The next message, or an error once the deadline passed."""
        import select
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError("no answer from chromium in time")
            r, _, _ = select.select([self.from_child], [], [], left)
            if not r:
                continue
            chunk = os.read(self.from_child, 65536)
            if not chunk:
                raise RuntimeError("chromium closed its pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def close(self):
        try:
            self.send("Browser.close", timeout=5.0)
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def measure(b, session, url, width, shot):
    """Lay the page out at one width; its report, and the PNG if asked."""
    b.send("Emulation.setDeviceMetricsOverride",
           {"width": width, "height": 900, "deviceScaleFactor": 1,
            "mobile": width < 600}, session)
    b.send("Page.navigate", {"url": url}, session)
    deadline = time.monotonic() + 8.0
    got = None
    while True:
        r = b.send("Runtime.evaluate",
                   {"expression": MEASURE, "returnByValue": True}, session)
        value = r.get("result", {}).get("value")
        got = json.loads(value) if value else None
        if (got and got["rows"] > 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    if got is None:
        raise RuntimeError("the page could not be measured")
    if shot:
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": width,
                "height": min(got["height"], 1600 if width < 600 else 8000),
                "deviceScaleFactor": 1, "mobile": width < 600}, session)
        time.sleep(0.3)
        png = b.send("Page.captureScreenshot", {"format": "png"},
                     session)["data"]
        with open(shot, "wb") as f:
            f.write(base64.b64decode(png))
    return got


def main():
    if len(sys.argv) < 5:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 64
    chromium, url, profile = sys.argv[1:4]
    b = Browser(chromium, profile)
    try:
        target = b.send("Target.createTarget", {"url": "about:blank"})
        session = b.send("Target.attachToTarget",
                         {"targetId": target["targetId"],
                          "flatten": True})["sessionId"]
        for arg in sys.argv[4:]:
            width, _, shot = arg.partition(":")
            print(json.dumps(measure(b, session, url, int(width),
                                     shot or None)), flush=True)
        return 0
    except Exception as e:
        print("page_layout: %s" % e, file=sys.stderr)
        return 2
    finally:
        b.close()


if __name__ == "__main__":
    sys.exit(main())
