"""File bytes on disk under the data directory, written so a crash never leaves half a file.

Each file is written to a temporary name in the same directory, fsynced,
renamed over its final name and the directory fsynced: after a crash a file
is either whole or absent. Metadata lives in the BatchStore.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import BinaryIO

from golive.observe.requestlog import data_dir

CHUNK = 1 << 20

# Purposes a client may upload with (OpenAI's list); "batch_output" is ours to write.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
OUTPUT_PURPOSE = "batch_output"
BATCH_FILE_TTL = 30 * 24 * 3600  # OpenAI: batch files expire after 30 days by default


class TooLarge(Exception):
    def __init__(self, limit: int):
        super().__init__(f"more than {limit} bytes")
        self.limit = limit


def new_file_id() -> str:
    return f"file-{secrets.token_hex(12)}"


def derived_file_id(batch_id: str, kind: str) -> str:
    """The same id every time for one batch's output or error file (see BatchStore.finish)."""
    return "file-" + hashlib.sha256(f"{batch_id}:{kind}".encode()).hexdigest()[:24]


class FileBytes:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or data_dir() / "files"
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, file_id: str) -> Path:
        if "/" in file_id or file_id.startswith("."):
            raise ValueError(f"bad file id {file_id!r}")
        return self.root / file_id

    def save_stream(self, file_id: str, src: BinaryIO, limit: int) -> int:
        """Copy `src` into the store; TooLarge (and nothing stored) past `limit` bytes."""
        size = 0

        def chunks() -> Iterable[bytes]:
            nonlocal size
            while block := src.read(CHUNK):
                size += len(block)
                if size > limit:
                    raise TooLarge(limit)
                yield block

        self._write(file_id, chunks())
        return size

    def save_lines(self, file_id: str, lines: Iterable[str]) -> int:
        """Write JSONL lines; returns the byte count."""
        size = 0

        def chunks() -> Iterable[bytes]:
            nonlocal size
            buf: list[bytes] = []
            n = 0
            for line in lines:
                b = line.encode() + b"\n"
                buf.append(b)
                n += len(b)
                if n >= CHUNK:
                    size += n
                    yield b"".join(buf)
                    buf, n = [], 0
            size += n
            yield b"".join(buf)

        self._write(file_id, chunks())
        return size

    def open(self, file_id: str) -> BinaryIO:
        return self.path(file_id).open("rb")

    def read(self, file_id: str) -> bytes:
        return self.path(file_id).read_bytes()

    def exists(self, file_id: str) -> bool:
        return self.path(file_id).is_file()

    def delete(self, file_id: str) -> None:
        self.path(file_id).unlink(missing_ok=True)
        _fsync_dir(self.root)

    def _write(self, file_id: str, chunks: Iterable[bytes]) -> None:
        final = self.path(file_id)
        fd, tmp = tempfile.mkstemp(prefix=f".{file_id}.", suffix=".part", dir=self.root)
        try:
            with os.fdopen(fd, "wb") as out:
                for block in chunks:
                    out.write(block)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, final)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _fsync_dir(self.root)

    def sweep_partials(self) -> None:
        """Remove temporary files a crash left behind."""
        for p in self.root.glob(".*.part"):
            p.unlink(missing_ok=True)


def _fsync_dir(path: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

