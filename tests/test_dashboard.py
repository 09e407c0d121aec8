"""The live dashboard: its event stream (resume, bounds) in process, then the page in a real headless
Chromium against real `edged run` processes and a real mosquitto.

Chromium is driven over the Chrome DevTools Protocol on ``--remote-debugging-pipe`` (NUL-separated JSON
on file descriptors 3 and 4), so no websocket client, selenium or playwright is needed.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from conftest import daemon_config, make_epoch, replay_device, start_daemon
from onnx_factory import write_model
from PIL import Image

from edged.sinks.broker import free_port
from edged.sinks.dashboard import DashboardDevice, DashboardSink

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"
SHORT = REPO.parent / "shared" / "data" / "ibi-sleep-slpdb" / "slp67x.rr"  # a 77-min record: a quick second run
MODEL = "ibi-slpdb-causal-v1"


# ------------------------------------------------------------------------------ the event stream


async def _request(port: int, path: str, *, method: str = "GET", headers: str = "") -> tuple[str, bytes, asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    host = "" if "Host:" in headers else "Host: localhost\r\n"
    writer.write(f"{method} {path} HTTP/1.1\r\n{host}{headers}\r\n".encode())
    await writer.drain()
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
    return head.decode().split("\r\n")[0], head, reader, writer


async def _events(reader: asyncio.StreamReader, n: int) -> list[dict]:
    """The next ``n`` events (comments and the retry line skipped), each as {event, id, data}."""
    out = []
    while len(out) < n:
        block = (await asyncio.wait_for(reader.readuntil(b"\n\n"), 5)).decode()
        fields = {}
        for line in block.strip("\n").split("\n"):
            name, _, value = line.partition(": ")
            fields[name] = value
        if "event" in fields:
            out.append({"event": fields["event"], "id": fields.get("id"), "data": json.loads(fields["data"])})
    return out


def test_event_stream_resumes_from_last_event_id_and_keeps_bounded_history():
    async def scenario():
        sink = DashboardSink("n1", [DashboardDevice("strap", "hrv-gru-v1", ("W", "N1", "N2", "N3", "REM"), True)],
                             port=0, history_epochs=3, max_clients=2)
        await sink.start()
        try:
            sink.set_availability("strap", True)
            for i in range(5):
                sink.publish_stage(make_epoch(i, synthetic=True))
            status, head, reader, writer = await _request(sink.port, "/events")
            assert status == "HTTP/1.1 200 OK" and b"text/event-stream" in head
            first = await _events(reader, 5)
            assert [e["event"] for e in first] == ["hello", "stage", "stage", "stage", "availability"]
            hello = first[0]["data"]
            assert hello["run"] == sink.run and hello["devices"][0]["synthetic"] is True
            assert [e["data"]["epoch"] for e in first[1:4]] == [2, 3, 4]  # only the last 3 are kept
            assert [e["id"] for e in first[1:4]] == [f"{sink.run}-{i}" for i in (3, 4, 5)]
            assert first[1]["data"]["warning"] and first[1]["data"]["model"]["synthetic"] is True
            # Live: the next epoch arrives as it is scored.
            sink.publish_stage(make_epoch(5, synthetic=True))
            (live,) = await _events(reader, 1)
            assert live["data"]["epoch"] == 5 and live["id"] == f"{sink.run}-6"
            # A third browser is refused while two streams are open.
            _, _, r2, w2 = await _request(sink.port, "/events", headers=f"Last-Event-ID: {sink.run}-4\r\n")
            status, *_ = await _request(sink.port, "/events")
            assert status.startswith("HTTP/1.1 503")
            # The resumed stream got only what it missed; an id from another run gets everything kept.
            resumed = await _events(r2, 4)
            assert [e["event"] for e in resumed] == ["hello", "stage", "stage", "availability"]
            assert [e["data"]["epoch"] for e in resumed[1:3]] == [4, 5] and resumed[0]["data"]["resumed"] is True
            writer.close()
            w2.close()
            await asyncio.sleep(0.1)
            _, _, r3, w3 = await _request(sink.port, "/events?last=otherrun-4")
            assert [e["data"].get("epoch") for e in (await _events(r3, 4))[1:4]] == [3, 4, 5]
            w3.close()
            # The page and its two assets; anything else is refused.
            for path, kind in (("/", b"text/html"), ("/dashboard.js", b"text/javascript"), ("/dashboard.css", b"text/css")):
                status, head, _, w = await _request(sink.port, path)
                assert status == "HTTP/1.1 200 OK" and kind in head, path
                w.close()
            assert (await _request(sink.port, "/nope"))[0].startswith("HTTP/1.1 404")
            # On loopback it answers to loopback names only (a DNS-rebinding page gets nothing).
            evil = await _request(sink.port, "/events", headers="Host: evil.example:8765\r\n")
            assert evil[0].startswith("HTTP/1.1 421")
            assert (await _request(sink.port, "/", method="POST"))[0].startswith("HTTP/1.1 405")
        finally:
            sink.close()
            await sink.wait_closed()

    asyncio.run(scenario())


# ------------------------------------------------------------------------------ headless Chromium


class Chromium:
    """A headless Chromium and one page, driven over the DevTools protocol on a pipe."""

    def __init__(self, profile: Path) -> None:
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        if exe is None:  # `make test` installs it (Debian package chromium): missing means a broken set-up
            pytest.fail("chromium is not installed: run `make test`, or apt-get install chromium")
        low_r, self._to_browser = os.pipe()
        self._from_browser, low_w = os.pipe()
        # The protocol pipe must be fds 3 (commands in) and 4 (replies out). bash moves them there (no
        # preexec_fn, which is unsafe in a process with threads), from fds >= 10 so that moving one can
        # never overwrite the other.
        to_browser_r, from_browser_w = (fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (low_r, low_w))
        os.close(low_r)
        os.close(low_w)
        self.proc = subprocess.Popen(
            ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w} {to_browser_r}<&- {from_browser_w}>&-',
             exe,
             "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-pipe", "--no-first-run",
             "--disable-extensions", "--disable-background-networking", "--mute-audio",
             f"--user-data-dir={profile}", "--window-size=1200,1100", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(to_browser_r, from_browser_w))
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next_id = 0
        self._replies: dict[int, dict] = {}
        self._cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        page = next(t for t in self.call("Target.getTargets")["targetInfos"] if t["type"] == "page")
        self.session = self.call("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 65536):
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._cond:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._replies[message["id"]] = message
                self._cond.notify_all()

    def call(self, method: str, session: bool = False, **params) -> dict:
        with self._cond:
            self._next_id += 1
            mid = self._next_id
        message = {"id": mid, "method": method, "params": params}
        if session:
            message["sessionId"] = self.session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        with self._cond:
            if not self._cond.wait_for(lambda: mid in self._replies, timeout=20):
                raise TimeoutError(f"Chromium did not answer {method}")
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        return reply["result"]

    def evaluate(self, expression: str):
        result = self.call("Runtime.evaluate", session=True, expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 20.0):
        """Poll a JS expression until it is truthy; return its value."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = self.evaluate(expression)
            if value:
                return value
            time.sleep(0.2)
        raise AssertionError(f"the page never satisfied {expression!r}; body: "
                             f"{self.evaluate('document.body.innerText')[:500]!r}")

    def screenshot(self) -> Image.Image:
        data = self.call("Page.captureScreenshot", session=True, format="png")["data"]
        return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        os.close(self._to_browser)


def write_config(tmp_path: Path, broker, base: str, port: int, recording: Path, model: str = MODEL) -> Path:
    cfg = tmp_path / f"edged-{recording.stem}.toml"
    cfg.write_text(daemon_config(broker, base, replay_device(recording, model=model), node="dash",
                                 sections=f'[dashboard]\nenabled = true\nhost = "127.0.0.1"\nport = {port}\n'))
    return cfg


def night_delivered(messages, prefix: str, after: int = 0) -> bool:
    """A replay ended (final counters, then offline) and all its scored epochs arrived (from ``after`` on)."""
    new = messages[after:]
    counters = [m.json()["counters"] for m in new if m.topic == f"{prefix}/counters"]
    stages = sum(m.topic == f"{prefix}/stage" for m in new)
    offline = any(m.topic == f"{prefix}/availability" and m.payload == b"offline" for m in new)
    return offline and bool(counters) and 0 < counters[-1].get("epochs_scored", 0) <= stages


DOM_EPOCHS = """[...document.querySelectorAll('section.device[data-device="bed1"] rect.ep')]
                .map(r => [r.dataset.id, r.dataset.stage])"""


def test_page_shows_the_night_and_reconnects_after_a_restart(tmp_path, broker, subscribe, topic_base):
    prefix = f"{topic_base}/dash/bed1"
    port = free_port()
    sub = subscribe(f"{topic_base}/#")
    daemon = start_daemon(write_config(tmp_path, broker, topic_base, port, DEMO))
    browser = None
    try:
        sub.wait_for(lambda ms: night_delivered(ms, prefix), timeout=60)
        first = [m.json() for m in sub.on(f"{prefix}/stage")]
        assert len(first) > 500

        browser = Chromium(tmp_path / "profile")
        browser.call("Page.enable", session=True)
        browser.call("Page.navigate", session=True, url=f"http://127.0.0.1:{port}/")
        expected = sorted([m["id"], m["stage"]] for m in first)
        browser.wait_for(f"{DOM_EPOCHS}.length === {len(first)}")
        assert sorted(browser.evaluate(DOM_EPOCHS)) == expected
        assert browser.evaluate("document.querySelector('.stage-now').dataset.stage") == first[-1]["stage"]
        assert browser.evaluate("document.querySelector('.device-conn').dataset.state") == "offline"  # replay over
        assert browser.evaluate("document.body.dataset.state") == "live"
        assert browser.evaluate("document.querySelectorAll('rect.ep.synthetic, .synthetic-badge').length") == 0
        run1 = browser.evaluate("document.body.dataset.run")

        # The screenshot shows the hypnogram: the stage colours fill a real share of the page.
        shot = browser.screenshot()
        shot.save(tmp_path / "night.png")
        colours = shot.getcolors(maxcolors=1 << 20)
        assert len(colours) > 50, "the screenshot is nearly blank"
        wake, nrem = (0xF2, 0xCC, 0x60), (0x38, 0x8B, 0xFD)
        counts = {c: n for n, c in colours}
        area = shot.width * shot.height
        assert counts.get(wake, 0) > area * 0.002 and counts.get(nrem, 0) > area * 0.002, \
            f"hypnogram colours missing (W {counts.get(wake, 0)}, NREM {counts.get(nrem, 0)} of {area} px)"

        # The daemon restarts, now with a model trained on synthetic signals: the page notices, reconnects
        # to the new run, shows its new epochs and marks them as synthetic.
        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(20) == 0
        browser.wait_for("document.body.dataset.state === 'reconnecting'", timeout=10)
        mark = len(sub.messages)
        synthetic = write_model(tmp_path, model_id="synthetic-ibi", synthetic=True)
        daemon = start_daemon(write_config(tmp_path, broker, topic_base, port, SHORT, str(synthetic)))
        sub.wait_for(lambda ms: night_delivered(ms, prefix, after=mark), timeout=60)
        second = [m.json() for m in sub.messages[mark:] if m.topic == f"{prefix}/stage"]
        assert {m["session"] for m in second}.isdisjoint({m["session"] for m in first})  # new epochs, new ids
        browser.wait_for(f"document.body.dataset.run !== {json.dumps(run1)} && "
                         f"document.body.dataset.state === 'live' && {DOM_EPOCHS}.length === {len(second)}", timeout=20)
        assert sorted(browser.evaluate(DOM_EPOCHS)) == sorted([m["id"], m["stage"]] for m in second)
        assert all(m["model"]["synthetic"] and m["warning"] for m in second)
        assert browser.evaluate("document.querySelectorAll('section.device rect.ep:not(.synthetic)').length") == 0
        assert "SYNTHETIC" in browser.evaluate("document.querySelector('.synthetic-badge').textContent")
        assert browser.evaluate("document.querySelector('.stage-now').textContent").endswith("*")
        # The earlier night is still there to pick.
        assert browser.evaluate("document.querySelectorAll('select.session option').length") == 2
    finally:
        if browser is not None:
            browser.close()
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
        _, err = daemon.communicate(timeout=20)
    assert "Traceback" not in err, err


def test_a_dashboard_port_in_use_is_one_clear_error_before_anything_is_published(tmp_path, broker, subscribe, topic_base):
    sub = subscribe(f"{topic_base}/#")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "edged.cli", "run", "--config",
                                 str(write_config(tmp_path, broker, topic_base, port, DEMO))],
                                capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("edged: error: ")]
    assert errors == [(f"edged: error: dashboard: cannot listen on 127.0.0.1:{port}: Address already in use "
                       "(set [dashboard] host/port)")], result.stderr
    time.sleep(0.3)
    assert sub.messages == []  # the node never claimed to be online
