"""Which weight file the engine loads (engine/weights.py)."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from golive.commands import app
from golive.engine.model import Model, default_model_path
from golive.engine.runner import Runner
from golive.engine.weights import cached_path, content_key, file_type, resolve


def test_the_default_q4_1_model_is_served_from_a_cached_q8_0_copy(tmp_path, monkeypatch):
    monkeypatch.setenv("GOLIVE_CACHE_DIR", str(tmp_path))
    src = default_model_path()
    assert file_type(src) == 3  # Q4_1
    path, what = resolve(src, "auto")
    assert what == "Q4_1 -> Q8_0" and path.parent == tmp_path / "weights"
    assert file_type(path) == 7  # Q8_0
    again, _ = resolve(src, "auto")  # cached: the same file, not converted twice
    assert again == path and path.stat().st_mtime_ns == again.stat().st_mtime_ns
    assert resolve(src, "original") == (src, "original")
    assert resolve(path, "auto") == (path, "original")  # Q8_0 already: nothing to do
    assert not list((tmp_path / "weights").glob("*.tmp"))


def test_the_cache_key_is_the_content_not_the_path(tmp_path, monkeypatch):
    # logic: the key alone, nothing converted or loaded (the test below converts)
    monkeypatch.setenv("GOLIVE_CACHE_DIR", str(tmp_path / "cache"))
    a, b = tmp_path / "clone-a" / "model.gguf", tmp_path / "venv-b" / "other-name.gguf"
    for i, copy in enumerate((a, b)):
        copy.parent.mkdir()
        shutil.copyfile(default_model_path(), copy)
        os.utime(copy, ns=(10**9 * (i + 1), 10**9 * (i + 1)))  # and their own mtimes
    assert content_key(a) == content_key(b) and cached_path(a) == cached_path(b)
    assert cached_path(a).parent == tmp_path / "cache" / "weights"
    with b.open("ab") as f:  # same path, same name: another content, another key
        f.write(b"\0")
    assert cached_path(b) != cached_path(a)


def test_copies_of_one_gguf_at_different_paths_share_one_cached_conversion(tmp_path,
                                                                          monkeypatch):
    monkeypatch.setenv("GOLIVE_CACHE_DIR", str(tmp_path / "cache"))
    src = default_model_path()
    copy = tmp_path / "elsewhere" / "renamed.gguf"  # another clone, venv or name
    copy.parent.mkdir()
    shutil.copyfile(src, copy)
    os.utime(copy, ns=(1_000_000_000, 1_000_000_000))  # and another mtime
    first, _ = resolve(src, "auto")
    converted_at = first.stat().st_mtime_ns
    second, what = resolve(copy, "auto")
    assert what == "Q4_1 -> Q8_0" and second == first
    assert second.stat().st_mtime_ns == converted_at  # found, not converted again
    assert [p.name for p in (tmp_path / "cache" / "weights").iterdir()] == [first.name]
    # the key is the content: one byte changed is another file
    with copy.open("r+b") as f:
        f.seek(-1, os.SEEK_END)
        last = f.read(1)
        f.seek(-1, os.SEEK_END)
        f.write(bytes([last[0] ^ 1]))
    assert content_key(copy) != content_key(src)
    assert cached_path(copy) != first


def test_the_copy_predicts_like_the_original():
    # Q8_0 holds the Q4_1 weights almost exactly: the next-token distributions agree
    text = ("The river flows through the old town, past the mill and the church, "
            "and then turns north towards the hills where the shepherds live. ") * 4
    rows = []
    for weights in ("original", "auto"):
        m = Model(weights=weights)
        toks = m.tokenize(text)
        r = Runner(m, 1024, 1, 512, 1)
        r.decode(toks, list(range(len(toks))), [0] * len(toks), [True] * len(toks))
        rows.append(np.array([r.logits(i).copy() for i in range(len(toks))]))
        r.close()
        m.close()
    a, b = rows

    def log_softmax(x):
        x = x - x.max(1, keepdims=True)
        return x - np.log(np.exp(x).sum(1, keepdims=True))

    la, lb = log_softmax(a), log_softmax(b)
    kl = float((np.exp(la) * (la - lb)).sum(1).mean())
    agree = float((a.argmax(1) == b.argmax(1)).mean())
    assert kl < 0.02 and agree > 0.9, (kl, agree)


def test_bad_weights_mode():
    with pytest.raises(ValueError, match="weights must be one of"):
        resolve(default_model_path(), "q2_k")
    r = CliRunner().invoke(app, ["serve", "--weights", "q2_k"])
    assert r.exit_code == 2 and "--weights" in r.output


def test_health_says_which_weights_are_served(server):
    assert server.health()["weights"] == "Q4_1 -> Q8_0"
