"""A server on this machine as a subprocess: `golive serve` by default, any command on request.

The tests, the benchmarks and `golive levers demo` all start one the same way:

    with LocalServer(["--threads", "1"]) as server:
        OpenAI(base_url=server.base_url, api_key="x")

- a free 127.0.0.1 port unless `port` is given;
- `python -m golive.commands serve --host 127.0.0.1 --port PORT ARGS...` with this
  interpreter (so the server runs the golive the caller imports, console script
  or not), or with `command=` any other server's argv;
- ready when GET `ready_path` (default `/health`) answers 200, within
  `ready_timeout`; if the process exits first or the time runs out,
  `ServerStartError` says which, with the tail of the server's log;
- the server runs in its own session (process group), so stopping it stops
  everything it started: SIGTERM to the group, SIGKILL after `grace` seconds.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import httpx

__all__ = ["LocalServer", "ServerStartError", "free_port", "golive_command"]


class ServerStartError(RuntimeError):
    """The server exited or did not become ready; the message ends with its log's tail."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def golive_command() -> list[str]:
    """How to run `golive` with this interpreter: the package, not a console script
    (one may be missing, or belong to another install)."""
    return [sys.executable, "-m", "golive.commands"]


def log_tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class LocalServer:
    """One server subprocess on 127.0.0.1; a context manager (start on enter, stop on exit).

    args      flags after `golive serve --host 127.0.0.1 --port PORT`
    port      the port (a free one if None)
    env       added to (not replacing) this process's environment
    log_path  where stdout and stderr go (if None, a temporary file, removed on a clean stop)
    command   instead of golive: a function port -> argv for any other server
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        port: int | None = None,
        env: Mapping[str, str] | None = None,
        log_path: Path | str | None = None,
        *,
        command: Callable[[int], Sequence[str]] | None = None,
        ready_path: str = "/health",
        ready_timeout: float = 120.0,
        grace: float = 15.0,
    ):
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.base_url = self.url + "/v1"
        self.is_golive = command is None
        if command is None:
            self.argv = [*golive_command(), "serve", "--host", "127.0.0.1",
                         "--port", str(self.port), *args]
        else:
            self.argv = [*command(self.port), *args]
        self.env = dict(env or {})
        self._own_log = log_path is None  # a temporary log goes when the run went well
        # the temporary one is made by start(): a server never started leaves no file
        self.log_path: Path | None = None if log_path is None else Path(log_path)
        self.ready_path = ready_path
        self.ready_timeout = ready_timeout
        self.grace = grace
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # --- lifecycle -------------------------------------------------------

    def start(self) -> LocalServer:
        """Start the process and wait until it is ready; stops it again if it is not."""
        if self.proc is not None:
            raise RuntimeError("server already started")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"golive-server-{self.port}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **self.env},
            start_new_session=True,
        )
        atexit.register(self.stop)  # an interrupted run leaves no server behind
        try:
            self.wait_ready()
        except BaseException:
            self._own_log = False  # the error names the log: keep it
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        assert self.proc is not None and self.log_path is not None
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise ServerStartError(
                    f"server exited with {self.proc.returncode} before it was ready "
                    f"({' '.join(self.argv)}); log {self.log_path}:\n{log_tail(self.log_path)}")
            try:
                if httpx.get(self.url + self.ready_path, timeout=2.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise ServerStartError(
            f"server not ready after {self.ready_timeout:.0f}s ({' '.join(self.argv)}); "
            f"log {self.log_path}:\n{log_tail(self.log_path)}")

    def stop(self) -> None:
        """SIGTERM to the server's process group, SIGKILL after `grace` seconds. Idempotent."""
        atexit.unregister(self.stop)
        proc = self.proc
        if proc is not None:
            if proc.poll() is None:
                self._signal_group(proc, signal.SIGTERM)
                try:
                    proc.wait(timeout=self.grace)
                except subprocess.TimeoutExpired:
                    pass
            # The leader may be gone while children it started still run.
            self._signal_group(proc, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=self.grace)
        if self._log is not None:
            self._log.close()
            self._log = None
            if self._own_log and self.log_path is not None:
                self.log_path.unlink(missing_ok=True)

    @staticmethod
    def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
        # start_new_session made the server its group's leader: pgid == pid.
        try:
            os.killpg(proc.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass

    def health(self, timeout: float = 5.0) -> dict[str, Any]:
        """GET /health as JSON (raises on an HTTP error)."""
        r = httpx.get(self.url + "/health", timeout=timeout)
        r.raise_for_status()
        return dict(r.json())

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_text(self) -> str:
        path = self.log_path
        return path.read_text(errors="replace") if path is not None and path.exists() else ""

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if exc_type is not None:
            self._own_log = False  # keep the log of a run that failed
        self.stop()
