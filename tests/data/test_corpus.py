"""The tokenizer and pretraining corpora: deterministic, cheap, and free of instruction-stage data."""
import hashlib
import time

from raycf.data import STAGES, load_stage, load_task
from raycf.data import corpus
from raycf.data.template import PROMPT_NO_INPUT, PROMPT_WITH_INPUT


def digest(texts):
    return hashlib.sha256("\0".join(texts).encode()).hexdigest()[:16]


def test_corpus_is_deterministic_and_golden():
    corpus._pretrain_texts.cache_clear()
    t0 = time.time()
    texts = corpus.tokenizer_texts()
    assert time.time() - t0 < 1.5  # called by every tiny_tokenizer(); measured ~0.3 s
    assert texts[:2] == [PROMPT_WITH_INPUT, PROMPT_NO_INPUT]
    docs = corpus.pretrain_texts()
    corpus._pretrain_texts.cache_clear()
    assert corpus.pretrain_texts() == docs and corpus.tokenizer_texts() == texts
    assert (len(docs), sum(map(len, docs))) == GOLDEN_SIZE
    assert digest(docs) == GOLDEN_DIGEST


def test_corpus_has_no_instruction_stage_answer():
    # Inputs may restate a fact of the toy world ("Fish can breathe under water."); what a stage teaches,
    # its responses, must be new to raycf-tiny.
    text = "\n".join(corpus.pretrain_texts())
    for stage in STAGES:
        for row in load_stage(stage) + load_stage(stage, "eval"):
            assert row["output"] not in text, (stage, row)


def test_corpus_has_no_shipped_reasoning_or_reading_row():
    # No corpus document is a shipped probe row. (A short yes/no question can occur inside a longer
    # passage of another document: the toy world's facts are taught, the probe rows are not.)
    docs = corpus.pretrain_texts()
    for name in ("boolq_toy", "mathqa_toy", "race_middle_toy", "race_high_toy"):
        t = load_task(name)
        contexts = tuple(t.template.format(**row) for row in t.rows)
        assert not [d for d in docs if d.startswith(contexts)], name


def test_corpus_states_every_fact_and_has_the_alpaca_template():
    text = "\n".join(corpus.pretrain_texts())
    assert "The capital of Uruguay is Montevideo." in text and "Montevideo is the capital of Uruguay." in text
    assert "The chemical symbol for silver is Ag." in text and "The opposite of first is last." in text
    assert "To find north in a forest, use a compass." in text
    assert text.count("### Instruction:") >= 500 and text.count("### Response:\n") >= 500
    assert "I heard that the teenager slept until noon." in text


GOLDEN_SIZE = (9700, 1565585)
GOLDEN_DIGEST = "b68305202898965a"
