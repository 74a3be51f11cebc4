"""Generation metrics of the continual instruction tasks, offline: BLEU, ROUGE-1 and SARI (0-100).

    python -c "from raycf.metrics import sari; print(sari(['a b c'], ['a b'], [['a b']]))"   # 100.0

The study scores text simplification with SARI, dialogue / question / explanation generation with
BLEU and constrained headlines with ROUGE-1 (PAPER.md). `references` is one reference string per
prediction or a list of references per prediction.
  bleu    sacreBLEU corpus BLEU with its defaults (13a tokenizer, cased, exp smoothing); several
          references per prediction must come in equal numbers.
  rouge1  rouge_score ROUGE-1 F-measure with the Porter stemmer (the usual setup for headline
          generation; rouge_score lowercases and keeps [a-z0-9] tokens), best reference per
          prediction, averaged over predictions.
  sari    SARI (Xu et al. 2016) as HF `evaluate` computes it: each sentence lowercased and
          13a-tokenized, n-grams 1..4, keep F1, deletion precision, addition F1, 0/0 = 1 and the
          keep-recall fix of tensor2tensor; sentence scores averaged over the corpus (EASSE's
          corpus_sari aggregates counts instead and gives different numbers).
"""
from __future__ import annotations

from collections import Counter
from functools import cache

# sacrebleu and rouge_score (nltk) are imported where used: they take 1.5 s, and a probe process that scores only
# multiple choice needs neither


def reference_lists(predictions: list[str], references: list[str] | list[list[str]]) -> list[list[str]]:
    if len(predictions) != len(references) or not predictions:
        raise ValueError(f"need one entry of references per prediction and at least one prediction, "
                         f"got {len(predictions)} predictions and {len(references)} references")
    return [[r] if isinstance(r, str) else list(r) for r in references]


def bleu(predictions: list[str], references: list[str] | list[list[str]]) -> float:
    refs = reference_lists(predictions, references)
    if len({len(r) for r in refs}) != 1:
        raise ValueError("bleu needs the same number of references for every prediction")
    import sacrebleu
    streams = [list(stream) for stream in zip(*refs)]  # sacrebleu wants one stream per reference slot
    return float(sacrebleu.corpus_bleu(predictions, streams).score)


@cache
def rouge1_scorer():
    from rouge_score import rouge_scorer
    return rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)


def rouge1(predictions: list[str], references: list[str] | list[list[str]]) -> float:
    refs = reference_lists(predictions, references)
    scores = [rouge1_scorer().score_multi(r, p)["rouge1"].fmeasure for p, r in zip(predictions, refs)]
    return 100 * sum(scores) / len(scores)


def sari(sources: list[str], predictions: list[str], references: list[list[str]]) -> float:
    if len(sources) != len(predictions):
        raise ValueError(f"{len(sources)} sources for {len(predictions)} predictions: give one of each per example")
    refs = reference_lists(predictions, references)
    scores = [sentence_sari(s, p, r) for s, p, r in zip(sources, predictions, refs)]
    return 100 * sum(scores) / len(scores)


def normalize(sentence: str) -> list[str]:
    # split(" "), not split(): evaluate does the same, so an empty output is one empty token there too.
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a
    return Tokenizer13a()(sentence.lower()).split(" ")


def ngrams(tokens: list[str], n: int) -> Counter:
    return Counter(" ".join(tokens[i:i + n]) for i in range(len(tokens) - n + 1))


def sentence_sari(source: str, prediction: str, references: list[str]) -> float:
    """SARI of one sentence in [0, 1]: mean over n = 1..4 of keep F1, deletion precision, add F1."""
    src, out, refs = normalize(source), normalize(prediction), [normalize(r) for r in references]
    parts = [sari_ngram(ngrams(src, n), ngrams(out, n), sum((ngrams(r, n) for r in refs), Counter()), len(refs))
             for n in range(1, 5)]
    return sum(sum(p) for p in parts) / (3 * len(parts))


def f1(precision: float, recall: float) -> float:
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator else 1.0  # 0/0 = 1: exact matches score 100


def sari_ngram(source: Counter, output: Counter, refs: Counter, n_refs: int) -> tuple[float, float, float]:
    """(keep F1, deletion precision, addition F1) for one n-gram order.

    Source and output counts are multiplied by the number of references so that they compare with
    the reference counts, which are summed over all references.
    """
    source = Counter({g: c * n_refs for g, c in source.items()})
    output = Counter({g: c * n_refs for g, c in output.items()})

    kept = source & output
    kept_good = kept & refs
    keep_precision = ratio(sum(kept_good[g] / kept[g] for g in kept_good), len(kept))
    keep_recall = ratio(sum(kept_good.values()), sum((source & refs).values()))

    deleted = source - output
    deleted_good = deleted - refs
    delete_precision = ratio(sum(deleted_good[g] / deleted[g] for g in deleted_good), len(deleted))

    added = set(output) - set(source)
    added_good = added & set(refs)
    add_precision = ratio(len(added_good), len(added))
    add_recall = ratio(len(added_good), len(set(refs) - set(source)))

    return f1(keep_precision, keep_recall), delete_precision, f1(add_precision, add_recall)
