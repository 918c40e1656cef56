"""llama.cpp's own C++ `llama-server`, built from the llama.cpp that llama-cpp-python vendors.

    python benchmarks/llama_server.py          # build once (about 10 minutes on 2 cores), print the path

The peer is the same llama.cpp golive runs on: the llama-cpp-python sdist of
the version golive pins ships `vendor/llama.cpp`; pip downloads it from PyPI
(no other host), cmake builds only the `llama-server` target with libcurl
off (models are local files). The binary is cached in
`~/.cache/golive/llama-server/<version>/` (`GOLIVE_CACHE_DIR`), so later runs
start at once.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path


def cache_dir() -> Path:
    root = Path(os.environ.get("GOLIVE_CACHE_DIR") or Path.home() / ".cache" / "golive")
    return root / "llama-server" / importlib.metadata.version("llama-cpp-python")


def binary() -> Path:
    return cache_dir() / "bin" / "llama-server"


def ensure_llama_server(jobs: int | None = None, log=print) -> Path:
    """The cached llama-server binary, building it first if needed."""
    exe = binary()
    if exe.exists():
        return exe
    version = importlib.metadata.version("llama-cpp-python")
    with tempfile.TemporaryDirectory(prefix="golive-llama-server-") as tmp:
        t = Path(tmp)
        log(f"downloading the llama-cpp-python {version} sdist from PyPI")
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--no-binary", ":all:", f"llama-cpp-python=={version}", "-d", str(t)],
                       check=True)
        sdist = next(t.glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            tar.extractall(t, filter="data")
        src = next(t.glob("llama_cpp_python-*/vendor/llama.cpp"))
        build = t / "build"
        jobs = jobs or os.cpu_count() or 1
        log(f"building llama-server from {src.relative_to(t)} with {jobs} jobs")
        subprocess.run(["cmake", "-S", str(src), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
                        "-DLLAMA_BUILD_SERVER=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF",
                        "-DLLAMA_BUILD_EXAMPLES=OFF", "-DBUILD_SHARED_LIBS=OFF"], check=True,
                       stdout=subprocess.DEVNULL)
        subprocess.run(["cmake", "--build", str(build), "--target", "llama-server", "-j",
                        str(jobs)], check=True, stdout=subprocess.DEVNULL)
        built = next(build.glob("**/bin/llama-server"))
        exe.parent.mkdir(parents=True, exist_ok=True)
        partial = exe.with_suffix(".partial")
        shutil.copy2(built, partial)
        partial.rename(exe)  # atomic: a concurrent run never sees half a binary
    return exe


if __name__ == "__main__":
    print(ensure_llama_server())
