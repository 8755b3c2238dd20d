"""Server and client process lifecycle with a fake ``vllm serve`` (no vLLM needed, seconds).

What the real e2e tests check with vLLM (tests/e2e/test_faults.py), checked
here quickly and deterministically: a server that never gets healthy or exits
early, a port already taken, a client whose server dies, a client that times
out, Ctrl-C during a client, and teardown that leaves no process behind even
when processes ignore SIGTERM or leave the process group.
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
import time
from pathlib import Path

import psutil
import pytest

from normbench.runners import server as srv

FAKE = Path(__file__).with_name("fake_server.py")


class FakeServer(srv.VllmServer):
    def __init__(self, tmp_path: Path, *flags: str, timeout: float = 20.0, grace: float = 5.0, port=None):
        super().__init__(model="fake", name="fake", compilation_config={"custom_ops": ["+rms_norm"]},
                         args=[], env=dict(os.environ), log_path=tmp_path / "fake-server.log",
                         startup_timeout_s=timeout, port=port, grace_s=grace)
        self.flags = list(flags)

    def command(self) -> list[str]:
        return [sys.executable, str(FAKE), "--port", str(self.port), *self.flags]


def _tree(server: srv.VllmServer) -> list[int]:
    assert server.process is not None
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # wait for child and grandchild to exist
        server.process.remember_children()
        kids = psutil.Process(server.process.pid).children(recursive=True)
        if len(kids) >= 2:
            return [server.process.pid, *(k.pid for k in kids)]
        time.sleep(0.1)
    raise AssertionError("the fake server did not start its children")


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            if psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
                return False
        except psutil.NoSuchProcess:
            continue
    return True


def test_healthy_server_then_teardown_kills_group_and_escapees(tmp_path):
    s = FakeServer(tmp_path, "--delay", "0.5", "--escape")
    s.start()
    pids = _tree(s)
    time.sleep(0.5)
    s.process.remember_children()
    escaped = [p.pid for p in psutil.Process(s.process.pid).children(recursive=True) if os.getpgid(p.pid) != s.process.pgid]
    assert escaped, "the --escape child should have left the group"
    assert s.effective_config["custom_ops"] == ["+rms_norm", "none"] and s.mismatches() == []
    s.stop()
    assert _gone(pids + escaped)
    assert srv.group_members(s.process.pgid) == []


def test_teardown_escalates_to_sigkill(tmp_path):
    s = FakeServer(tmp_path, "--ignore-sigterm", grace=1.0)
    s.start()
    pids = _tree(s)
    t0 = time.monotonic()
    s.stop()
    assert time.monotonic() - t0 < 15
    assert _gone(pids)


def test_never_healthy_times_out_with_log_tail(tmp_path):
    s = FakeServer(tmp_path, "--delay", "999", timeout=2.0)
    with pytest.raises(srv.ServerError) as e:
        s.start()
    assert "did not become healthy within 2 s" in str(e.value)
    assert "fake server starting" in e.value.log_tail and "last 30 log lines" in e.value.full()
    assert _gone([s.process.pid]) and srv.group_members(s.process.pgid) == []


def test_exit_before_healthy(tmp_path):
    s = FakeServer(tmp_path, "--delay", "999", "--exit-after", "0.3")
    with pytest.raises(srv.ServerError, match="exited with code 3 before becoming healthy") as e:
        s.start()
    assert "exiting on purpose" in e.value.log_tail
    assert srv.group_members(s.process.pgid) == []


def test_port_already_taken(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        s = FakeServer(tmp_path, port=port)
        with pytest.raises(srv.ServerError, match=f"port {port} on 127.0.0.1 is already in use"):
            s.start()
        assert s.process is None  # refused before launching anything
    # a --port in the server/variant args overrides the suite's port
    s2 = srv.VllmServer(model="m", name="m", compilation_config={}, args=["--port", "1234"], env={},
                        log_path=tmp_path / "x.log")
    assert s2.engine.given_port(s2.args) == 1234 and "--port" in s2.command()
    assert s2.command().count("--port") == 1


def test_client_stops_when_server_dies(tmp_path):
    s = FakeServer(tmp_path)
    s.start()
    pids = _tree(s)
    threading.Timer(1.0, os.kill, (s.process.pid, signal.SIGKILL)).start()
    t0 = time.monotonic()
    res = srv.run_tool([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "client.log",
                       dict(os.environ), timeout_s=60, server=s)
    assert res.stopped == "server died" and not res.ok and time.monotonic() - t0 < 20
    with pytest.raises(srv.ServerError, match="vllm serve died"):
        s.check_alive()
    s.stop()  # the dead leader's children are still found and killed
    assert _gone(pids)


def test_client_timeout(tmp_path):
    res = srv.run_tool([sys.executable, "-c", "print('working', flush=True); import time; time.sleep(60)"],
                       tmp_path / "client.log", dict(os.environ), timeout_s=1)
    assert res.stopped == "timeout after 1 s" and "working" in res.log_tail


def test_ctrl_c_during_a_client_stops_it(tmp_path):
    if threading.current_thread() is not threading.main_thread():
        pytest.skip("needs the main thread for SIGINT")
    code = "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); time.sleep(60)"
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    before = {p.pid for p in psutil.Process().children(recursive=True)}
    with pytest.raises(KeyboardInterrupt):
        srv.run_tool([sys.executable, "-c", code], tmp_path / "client.log", dict(os.environ), timeout_s=60)
    time.sleep(0.2)
    left = [p for p in psutil.Process().children(recursive=True) if p.pid not in before and p.status() != psutil.STATUS_ZOMBIE]
    assert left == []


def test_sigterm_becomes_keyboard_interrupt():
    with pytest.raises(KeyboardInterrupt):
        with srv.sigterm_as_interrupt():
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
    assert signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, signal.default_int_handler) or callable(
        signal.getsignal(signal.SIGTERM))
