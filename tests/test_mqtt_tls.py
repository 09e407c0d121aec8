"""MQTT over TLS with a password and a client certificate, end to end: the test makes its own CA and
certificates with the openssl CLI, runs a real mosquitto that requires all three, and runs the real
daemon (`edged run`) against it. Wrong credentials give one clear line and are retried, never a crash."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import ssl
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from conftest import start_daemon
from paho.mqtt.enums import CallbackAPIVersion

from edged.cli import main as edged
from edged.sinks.broker import find_mosquitto, free_port

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "edged" / "data" / "demo" / "slp61.rr"


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(directory: Path, name: str) -> None:
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{name}.key", "-out", f"{name}.crt", "-days", "2", "-subj", f"/CN=edged test {name}",
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            cwd=directory)


def make_cert(directory: Path, name: str, ca: str, extensions: str) -> None:
    (directory / f"{name}.ext").write_text(extensions + "\nsubjectKeyIdentifier=hash\n"
                                           "authorityKeyIdentifier=keyid\n")
    openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout",
            f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}", cwd=directory)
    openssl("x509", "-req", "-in", f"{name}.csr", "-CA", f"{ca}.crt", "-CAkey", f"{ca}.key",
            "-CAcreateserial", "-out", f"{name}.crt", "-days", "2", "-extfile", f"{name}.ext", cwd=directory)


class TlsBroker:
    """mosquitto with TLS, a password file and require_certificate, on a free loopback port."""

    def __init__(self, directory: Path, user: str, password: str):
        self.dir = directory
        self.port = free_port()
        subprocess.run(["mosquitto_passwd", "-b", "-c", str(directory / "passwd"), user, password],
                       check=True, capture_output=True, timeout=30)
        conf = directory / "mosquitto.conf"
        conf.write_text("\n".join([
            f"listener {self.port} 127.0.0.1",
            f"cafile {directory / 'ca.crt'}",
            f"certfile {directory / 'server.crt'}",
            f"keyfile {directory / 'server.key'}",
            "require_certificate true",
            "allow_anonymous false",
            f"password_file {directory / 'passwd'}",
            "persistence false",
            "log_dest stderr",
            "log_type all",
            *(["user root"] if os.geteuid() == 0 else []),  # stay able to read the private tmp_path
        ]) + "\n")
        self.log = open(directory / "mosquitto.log", "wb")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen([str(find_mosquitto()), "-c", str(conf)], stdout=self.log,
                                     stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 10
        while b" running" not in (directory / "mosquitto.log").read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("mosquitto did not start: " + (directory / "mosquitto.log").read_text())
            time.sleep(0.02)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def pki(tmp_path) -> Path:
    for tool in ("openssl", "mosquitto_passwd"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is not installed: apt-get install openssl mosquitto")  # set-up installs both
    make_ca(tmp_path, "ca")
    make_ca(tmp_path, "other-ca")  # a CA the broker's certificate does not come from
    make_cert(tmp_path, "server", "ca", "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth")
    make_cert(tmp_path, "client", "ca", "extendedKeyUsage=clientAuth")
    return tmp_path


@pytest.fixture
def tls_broker(pki):
    password = secrets.token_urlsafe(16)
    broker = TlsBroker(pki, "edged", password)
    broker.password = password  # type: ignore[attr-defined]
    yield broker
    broker.stop()


class TlsSubscriber:
    def __init__(self, pki: Path, port: int, password: str, topic: str):
        self.messages: list[mqtt.MQTTMessage] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"tls-sub-{uuid.uuid4().hex[:8]}")
        self.client.username_pw_set("edged", password)
        self.client.tls_set(ca_certs=str(pki / "ca.crt"), certfile=str(pki / "client.crt"),
                            keyfile=str(pki / "client.key"), cert_reqs=ssl.CERT_REQUIRED)
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=1) if not rc.is_failure else None
        self.client.on_subscribe = lambda *a: subscribed.set()
        self.client.on_message = lambda c, u, m: self._add(m)
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert subscribed.wait(10), "the TLS subscriber could not subscribe"

    def _add(self, message) -> None:
        with self.lock:
            self.messages.append(message)

    def stages(self) -> list[mqtt.MQTTMessage]:
        with self.lock:
            return [m for m in self.messages if m.topic.endswith("/stage")]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def excerpt(tmp_path: Path, minutes: int = 25) -> Path:
    """The first ``minutes`` of the bundled real night (slp61 RR)."""
    lines = DEMO.read_text().splitlines(keepends=True)
    out = tmp_path / "night.rr"
    out.write_text("".join(lines[: int(minutes * 60 * 1.1)]))  # ~66 beats a minute in slp61
    return out


def config(tmp_path: Path, name: str, port: int, base: str, recording_path: Path, *, ca: str = "ca.crt",
           password_file: str = "password", speed: float = 0.0, record_dir: Path | None = None) -> Path:
    cfg = tmp_path / f"{name}.toml"
    # daily_at_hour = -1: an accelerated replay must not be split because it passes noon on a fast clock
    recording = f'[recording]\ndir = "{record_dir}"\ndaily_at_hour = -1\n' if record_dir else ""
    cfg.write_text(f"""{recording}
[node]
id = "tls"
state_dir = "{tmp_path / ('state-' + name)}"

[mqtt]
host = "127.0.0.1"
port = {port}
base_topic = "{base}"
embedded = "never"
keepalive = 5
username = "edged"
password_file = "{password_file}"
tls = true
ca_file = "{ca}"
cert_file = "client.crt"
key_file = "$CREDENTIALS_DIRECTORY/client.key"

[[devices]]
name = "bed1"
type = "replay"
path = "{recording_path}"
speed = {speed}
record = {str(record_dir is not None).lower()}
""")
    return cfg


def daemon(cfg: Path, credentials: Path, *args: str) -> subprocess.Popen:
    # The client key comes the way systemd's LoadCredential= passes it: $CREDENTIALS_DIRECTORY.
    return start_daemon(cfg, *args, env={"CREDENTIALS_DIRECTORY": str(credentials)})


def credentials_dir(pki: Path) -> Path:
    creds = pki / "credentials"
    creds.mkdir(exist_ok=True)
    (creds / "client.key").write_bytes((pki / "client.key").read_bytes())
    return creds


def test_daemon_publishes_stages_over_tls_with_password_and_client_certificate(tmp_path, pki, tls_broker):
    night = excerpt(tmp_path)
    assert edged(["replay", str(night), "--json", str(tmp_path / "expected.json")]) == 0
    import json

    expected = json.loads((tmp_path / "expected.json").read_text())
    assert len(expected) >= 40
    (pki / "password").write_text(tls_broker.password + "\n")
    base = f"edged-tls-{uuid.uuid4().hex[:8]}"
    sub = TlsSubscriber(pki, tls_broker.port, tls_broker.password, f"{base}/#")
    proc = daemon(config(pki, "good", tls_broker.port, base, night, record_dir=tmp_path / "rec"), credentials_dir(pki),
                  "--exit-when-done", "--log-level", "debug")
    try:
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    deadline = time.monotonic() + 10
    while len(sub.stages()) < len(expected) and time.monotonic() < deadline:
        time.sleep(0.05)
    sub.close()
    assert proc.returncode == 0, stderr[-2000:]
    stages = [json.loads(m.payload) for m in sub.stages()]
    assert [s["stage"] for s in stages] == [e["stage"] for e in expected]
    assert "MQTT: connected to 127.0.0.1" in stderr
    assert tls_broker.password not in stderr  # not even at debug level
    # The same real daemon run kept a raw recording (record = true): re-scoring it gives the same stages.
    recorded = sorted((tmp_path / "rec" / "bed1").glob("*.edf"))
    assert len(recorded) == 1
    assert edged(["replay", str(recorded[0]), "--json", str(tmp_path / "again.json")]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert [e["stage"] for e in again] == [e["stage"] for e in expected]


def wait_for_line(proc: subprocess.Popen, needle: str, timeout: float) -> list[str]:
    """Lines of the daemon's stderr until one contains ``needle``, then ~3 s more (retries happen)."""
    lines: list[str] = []
    found_at = None
    deadline = time.monotonic() + timeout
    os.set_blocking(proc.stderr.fileno(), False)
    while time.monotonic() < deadline and (found_at is None or time.monotonic() < found_at + 3.0):
        chunk = proc.stderr.readline()
        if chunk:
            lines.append(chunk)
            if needle in chunk and found_at is None:
                found_at = time.monotonic()
        else:
            time.sleep(0.05)
    assert found_at is not None, f"no line with {needle!r}; got: {''.join(lines)[-2000:]}"
    return lines


def test_wrong_password_or_wrong_ca_give_one_clear_line_and_are_retried(tmp_path, pki, tls_broker):
    night = excerpt(tmp_path, minutes=25)
    (pki / "wrong-password").write_text("not-" + tls_broker.password)
    (pki / "password").write_text(tls_broker.password)
    cases = {  # both daemons at once: each waits out the same retry delays
        "broker refused the connection: Not authorized":
            config(pki, "badpw", tls_broker.port, "edged-tls-bad", night, password_file="wrong-password", speed=1.0),
        f"TLS: the certificate of 127.0.0.1:{tls_broker.port} was not accepted: ":  # + OpenSSL's reason
            config(pki, "badca", tls_broker.port, "edged-tls-bad", night, ca="other-ca.crt", speed=1.0),
    }
    procs = {needle: daemon(cfg, credentials_dir(pki)) for needle, cfg in cases.items()}
    try:
        for needle, proc in procs.items():
            lines = wait_for_line(proc, needle, timeout=30)
            assert proc.poll() is None, "the daemon stopped instead of retrying"
            problem_lines = [line for line in lines if "MQTT:" in line and "retrying" in line]
            assert len(problem_lines) == 1, problem_lines  # one line, not one per retry
            assert needle in problem_lines[0] and " edged ERROR " in problem_lines[0]  # needs a person
            assert "Traceback" not in "".join(lines)
            assert tls_broker.password not in "".join(lines)
        # mosquitto logs "New connection from ..." or "Client connection from ... failed" per attempt.
        attempts = (pki / "mosquitto.log").read_text().count("onnection from 127.0.0.1")
        assert attempts >= 4  # both kept trying
    finally:
        for proc in procs.values():
            proc.send_signal(signal.SIGTERM)
        for proc in procs.values():
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
    assert all(proc.returncode == 0 for proc in procs.values())
