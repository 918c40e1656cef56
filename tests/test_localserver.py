"""golive.localserver.LocalServer on a stand-in server (a few lines of http.server), so
the start, ready check, failure report and process-group stop are tested in seconds,
without the model. The real `golive serve` goes through the same code in every server
test (tests/conftest.py Server)."""

from __future__ import annotations

import os
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest

from golive.localserver import LocalServer, ServerStartError

pytestmark = pytest.mark.logic

# Answers GET /health and /v1/models with 200 once it has started a child process (a
# sleeper, whose pid it writes to the file named by argv[2]) that stopping must also end.
STAND_IN = textwrap.dedent("""
    import http.server, json, subprocess, sys
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    open(sys.argv[2], "w").write(str(child.pid))
    print("stand-in up", flush=True)

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = json.dumps({"status": "ok", "path": self.path}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
""")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (exited, not yet reaped by its parent) counts as gone
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split(") ")[-1].startswith("Z"))


def wait_gone(pid: int, timeout: float = 10) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_golive_argv_is_this_interpreter_on_loopback() -> None:
    s = LocalServer(["--slots", "2"], port=12345)
    assert s.argv == [sys.executable, "-m", "golive.commands", "serve", "--host", "127.0.0.1",
                      "--port", "12345", "--slots", "2"]
    assert s.url == "http://127.0.0.1:12345" and s.base_url == "http://127.0.0.1:12345/v1"
    assert s.is_golive and s.proc is None  # nothing runs before start()
    assert s.log_path is None  # a temporary log only once started


def test_start_ready_health_and_stop_the_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    s = LocalServer(command=lambda port: [sys.executable, "-c", STAND_IN, str(port),
                                          str(pid_file)],
                    log_path=tmp_path / "server.log", ready_timeout=30, grace=5)
    with s as server:
        assert server.running
        assert server.health() == {"status": "ok", "path": "/health"}
        assert httpx.get(server.base_url + "/models").status_code == 200
        child = int(pid_file.read_text())
        assert alive(child)
        assert "stand-in up" in server.log_text()
    assert not s.running and s.proc is not None and s.proc.returncode is not None
    assert wait_gone(child), "the server's child outlived stop(): the group was not stopped"
    s.stop()  # idempotent


def test_explicit_start_stop_and_sigkill_after_grace(tmp_path: Path) -> None:
    # A server that ignores SIGTERM is killed once the grace period is over.
    ignores_term = "import signal; signal.signal(signal.SIGTERM, signal.SIG_IGN)\n" + STAND_IN
    s = LocalServer(command=lambda port: [sys.executable, "-c", ignores_term, str(port),
                                          str(tmp_path / "child.pid")],
                    log_path=tmp_path / "server.log", ready_timeout=30, grace=0.5)
    assert s.start() is s
    t = time.monotonic()
    s.stop()
    assert s.proc is not None and s.proc.returncode is not None
    assert time.monotonic() - t < 5


def test_a_server_that_dies_reports_its_log_tail(tmp_path: Path) -> None:
    dies = "import sys; print('model file not found: /nowhere.gguf', flush=True); sys.exit(3)"
    s = LocalServer(command=lambda port: [sys.executable, "-c", dies],
                    log_path=tmp_path / "server.log", ready_timeout=30)
    with pytest.raises(ServerStartError) as err:
        s.start()
    msg = str(err.value)
    assert "exited with 3" in msg and "model file not found: /nowhere.gguf" in msg
    assert not s.running


def test_a_server_that_never_answers_times_out_with_its_log_tail(tmp_path: Path) -> None:
    silent = "import time; print('still loading', flush=True); time.sleep(600)"
    s = LocalServer(command=lambda port: [sys.executable, "-c", silent],
                    log_path=tmp_path / "server.log", ready_timeout=1, grace=2)
    with pytest.raises(ServerStartError, match=r"not ready after 1s") as err:
        s.start()
    assert "still loading" in str(err.value)
    assert s.proc is not None and s.proc.returncode is not None  # stopped, not left behind
