"""Start and stop Azurite (the Azure Storage emulator) from the project's own node_modules.

Used by the test session and by `make run`: in memory, on free loopback ports, so parallel runs and a
developer's own Azurite never collide.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from shared.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
AZURITE_BIN = ROOT / "node_modules" / ".bin" / "azurite"
KEY_LOOKUP = Path(__file__).resolve().parent / "azurite_keys.js"
"""Preloaded into Azurite: its tables find a row by key without scanning the partition (see the file)."""
# The well-known development account of every Azure Storage emulator; not a secret.
ACCOUNT = "devstoreaccount1"
ACCOUNT_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _node_options() -> str:
    """The caller's NODE_OPTIONS plus the key lookup preload (quoted: the checkout's path may hold spaces)."""
    return f"{os.environ.get('NODE_OPTIONS', '')} --require \"{KEY_LOOKUP}\"".strip()


def _listening(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Azurite:
    """One in-memory Azurite process with blob, queue and table services on free ports."""

    def __init__(self) -> None:
        self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir = tempfile.TemporaryDirectory(prefix="azurite-")

    @property
    def connection_string(self) -> str:
        base = "http://127.0.0.1"
        return (
            f"DefaultEndpointsProtocol=http;AccountName={ACCOUNT};AccountKey={ACCOUNT_KEY};"
            f"BlobEndpoint={base}:{self.blob_port}/{ACCOUNT};"
            f"QueueEndpoint={base}:{self.queue_port}/{ACCOUNT};"
            f"TableEndpoint={base}:{self.table_port}/{ACCOUNT};"
        )

    def start(self, timeout: float = 30.0, *, tries: int = 3) -> Azurite:
        """Start Azurite and wait until all three services accept connections.

        A free port is only free until someone else binds it; when Azurite loses that race it exits with
        "address already in use", and it is started again on new ports.
        """
        for attempt in range(1, tries + 1):
            try:
                return self._start_once(timeout)
            except ConfigError as exc:
                port_taken = "EADDRINUSE" in str(exc) or "address already in use" in str(exc)
                if not port_taken or attempt == tries:
                    raise
                self.blob_port, self.queue_port, self.table_port = free_port(), free_port(), free_port()
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> Azurite:
        if not AZURITE_BIN.exists():
            raise ConfigError(f"Azurite is not installed at {AZURITE_BIN}: run `npm install` (make does it for you)")
        self._process = subprocess.Popen(
            # --disableTelemetry: Azurite 3.35 collects usage telemetry for Microsoft unless told not to; a sandbox
            # with nothing to configure must not send anything anywhere (and here no network is reachable).
            [str(AZURITE_BIN), "--silent", "--inMemoryPersistence", "--skipApiVersionCheck", "--loose",
             "--disableTelemetry", "--blobHost", "127.0.0.1", "--blobPort", str(self.blob_port),
             "--queueHost", "127.0.0.1", "--queuePort", str(self.queue_port),
             "--tableHost", "127.0.0.1", "--tablePort", str(self.table_port)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True, cwd=self._workdir.name,
            env={**os.environ, "NODE_OPTIONS": _node_options()},
        )
        deadline = time.monotonic() + timeout
        ports = (self.blob_port, self.queue_port, self.table_port)
        while not all(_listening(port) for port in ports):
            if self._process.poll() is not None:
                error = (self._process.stderr.read() if self._process.stderr else b"").decode(errors="replace")
                raise ConfigError(f"Azurite exited at start (code {self._process.returncode}): {error.strip()[:300]}")
            if time.monotonic() > deadline:
                self.stop()
                raise ConfigError(f"Azurite did not listen on ports {ports} within {timeout:.0f} s")
            time.sleep(0.1)
        return self

    @property
    def pid(self) -> int | None:
        """Azurite's process id while it runs (the benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._process and self._process.stderr:
            self._process.stderr.close()
        self._workdir.cleanup()

    def __enter__(self) -> Azurite:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()


__all__ = ["ACCOUNT", "ACCOUNT_KEY", "Azurite", "free_port"]
