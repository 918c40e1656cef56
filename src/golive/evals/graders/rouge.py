"""ROUGE-1/2/L/Lsum with rouge-score, with its non-ASCII blind spot fixed.

rouge-score's default tokenizer lowercases and replaces everything outside
[a-z0-9] with spaces, so Chinese, Greek, Cyrillic or accented words vanish and
score 0. `UnicodeTokenizer` keeps letters and digits of every script and, for
scripts written without spaces (Chinese, Japanese, Thai...), makes each
character a token. On ASCII text it yields exactly the default tokens.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from rouge_score import rouge_scorer, tokenizers

from golive.evals.graders.base import Grade, GradeInput, SyncGrader
from golive.evals.prompts import references

log = logging.getLogger(__name__)

_WORD = re.compile(r"[^\W_]+")
# Scripts without spaces between words: CJK ideographs, kana, Hangul syllables
# are often spaced but short, Thai, Lao, Khmer, Myanmar.
_UNSPACED = re.compile(
    "[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\u0e00-\u0eff\u1000-\u109f"
    "\u1780-\u17ff\U00020000-\U0002fa1f]")
_SENTENCE_END = re.compile(r"(?<=[.!?。！？])\s+|(?<=[。！？])")


class UnicodeTokenizer(tokenizers.Tokenizer):
    def __init__(self, use_stemmer: bool = False):
        from nltk.stem import porter

        # The stemmer rouge-score itself uses (ROUGE-1.5.5 compatible).
        self._stemmer = porter.PorterStemmer("ORIGINAL_ALGORITHM") if use_stemmer else None

    def tokenize(self, text: str) -> list[str]:
        tokens: list[str] = []
        for word in _WORD.findall(text.lower()):
            if _UNSPACED.search(word):
                tokens.extend(_split_unspaced(word))
            elif self._stemmer is not None and len(word) > 3 and word.isascii():
                tokens.append(self._stemmer.stem(word))
            else:
                tokens.append(word)
        return tokens


def _split_unspaced(word: str) -> list[str]:
    # "gpt4是模型" -> ["gpt4", "是", "模", "型"]: runs of other letters stay whole.
    out: list[str] = []
    run = ""
    for ch in word:
        if _UNSPACED.match(ch):
            if run:
                out.append(run)
                run = ""
            out.append(ch)
        else:
            run += ch
    if run:
        out.append(run)
    return out


def sentences_to_lines(text: str) -> str:
    """rougeLsum splits summaries on newlines; put one sentence per line if there are none.

    (rouge-score's own split_summaries needs NLTK's punkt data, a download.)
    """
    if "\n" in text.strip():
        return text
    return "\n".join(s for s in _SENTENCE_END.split(text.strip()) if s)


@lru_cache(maxsize=16)
def scorer(variant: str, use_stemmer: bool, tokenizer: str) -> rouge_scorer.RougeScorer:
    tok = UnicodeTokenizer(use_stemmer) if tokenizer == "unicode" else None
    return rouge_scorer.RougeScorer([variant], use_stemmer=use_stemmer, tokenizer=tok)


def rouge(target: str, prediction: str, variant: str = "rougeL", use_stemmer: bool = False,
          tokenizer: str = "unicode") -> tuple[float, float, float]:
    """(precision, recall, f) of `prediction` against `target`."""
    if variant == "rougeLsum":
        target, prediction = sentences_to_lines(target), sentences_to_lines(prediction)
    s = scorer(variant, use_stemmer, tokenizer).score(target, prediction)[variant]
    return s.precision, s.recall, s.fmeasure


_warned = False


class RougeGrader(SyncGrader):
    def grade_sync(self, x: GradeInput) -> Grade:
        global _warned
        s = self.spec
        best: tuple[float, float, float] | None = None
        for ref in references(x.expected):
            if s.tokenizer == "default" and not _warned and not (ref + x.output).isascii():
                _warned = True
                log.warning("rouge: text has non-ASCII characters, which rouge-score's default "
                            "tokenizer drops (they score 0); use tokenizer: unicode")
            prf = rouge(ref, x.output, s.variant, s.use_stemmer, s.tokenizer)
            if best is None or prf[2] > best[2]:
                best = prf
        assert best is not None
        p, r, f = best
        value = {"f": f, "precision": p, "recall": r}[s.measure]
        return Grade(value, f"{s.variant} P={p:.3f} R={r:.3f} F={f:.3f}",
                     {"precision": p, "recall": r, "f": f})
