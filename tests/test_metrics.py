"""Generation metrics against documented and hand-computed values: pytest tests/test_metrics.py"""
import pytest

from raycf.metrics import bleu, rouge1, sari

HF_SOURCES = ["About 95 species are currently accepted."]
HF_PREDICTIONS = ["About 95 you now get in."]
HF_REFERENCES = [["About 95 species are currently known.", "About 95 species are now accepted.",
                  "95 species are now accepted."]]


def test_sari_hf_evaluate_documented_examples():
    # evaluate's metric card: the partial match example, and a perfect match = 100.0
    assert sari(HF_SOURCES, HF_PREDICTIONS, HF_REFERENCES) == pytest.approx(26.953601953601954, abs=1e-9)
    same = ["About 95 species are currently accepted ."]
    assert sari(same, same, [same]) == 100.0


def test_sari_copying_the_source():
    # source "a b", output "a b", reference "a":
    # n=1: kept {a, b}, only a is in the reference -> keep P = 1/2, R = 1/1, F1 = 2/3;
    #      nothing deleted -> del P = 0/0 = 1; nothing added and nothing to add -> add F1 = 1
    # n=2: kept {"a b"}, not in the reference -> keep P = 0, R = 0/0 = 1, F1 = 0; del 1, add 1
    # n=3, 4: no n-grams anywhere -> 1, 1, 1
    # keep = (2/3 + 0 + 1 + 1) / 4 = 2/3, del = add = 1 -> SARI = (2/3 + 1 + 1) / 3 = 8/9
    assert sari(["a b"], ["a b"], [["a"]]) == pytest.approx(800 / 9)


def test_sari_perfect_deletion():
    # source "a b c", output = reference = "a b": every kept n-gram is in the reference (keep 1),
    # every deleted n-gram (c, "b c", "a b c") is absent from it (del 1), nothing to add (add 1)
    assert sari(["a b c"], ["a b"], [["a b"]]) == pytest.approx(100.0)


def test_sari_bad_addition_two_references():
    # source "a b", output "a c", references "a b" and "a" (counts of source/output x 2 refs):
    # n=1: kept {a: 2}, all good -> keep P = 1; source & refs = {a: 2, b: 1} -> R = 2/3, F1 = 0.8
    #      deleted {b: 2}, minus refs {b: 1} leaves {b: 1} -> del P = (1/2) / 1 = 0.5
    #      added {c}, not in refs -> add P = 0; refs hold nothing new -> R = 1, F1 = 0
    # n=2: kept {} -> P = 1; source & refs = {"a b": 1} -> R = 0, F1 = 0
    #      deleted {"a b": 2} minus refs {"a b": 1} -> del P = 0.5; added {"a c"} bad -> add F1 = 0
    # n=3, 4: 1, 1, 1
    # keep = 2.8 / 4 = 0.7, del = 3 / 4 = 0.75, add = 2 / 4 = 0.5 -> SARI = 1.95 / 3 = 0.65
    assert sari(["a b"], ["a c"], [["a b", "a"]]) == pytest.approx(65.0)


def test_sari_lowercases_and_averages_sentences():
    # case and 13a tokenization do not matter; the corpus score is the mean of sentence scores
    assert sari(["A B."], ["a b ."], [["A"]]) == pytest.approx(sari(["a b ."], ["a b ."], [["a"]]))
    corpus = sari(["a b", "a b c"], ["a b", "a b"], [["a"], ["a b"]])
    assert corpus == pytest.approx((800 / 9 + 100) / 2)


def test_bleu_sacrebleu_readme_example():
    # sacreBLEU's README: BLEU = 48.53 82.4/50.0/45.5/37.5 (two reference streams)
    predictions = ["The dog bit the man.", "It wasn't surprising.", "The man had just bitten him."]
    references = [["The dog bit the man.", "The dog had bit the man."],
                  ["It was not unexpected.", "No one was surprised."],
                  ["The man bit him first.", "The man had bitten the dog."]]
    assert round(bleu(predictions, references), 2) == 48.53
    assert bleu(["the cat sat on the mat"], ["the cat sat on the mat"]) == pytest.approx(100.0)


def test_rouge1_f_measure_with_stemming():
    # "the cat sat" vs "the cat ran": 2 of 3 unigrams match both ways -> F = 2/3
    assert rouge1(["the cat sat"], ["the cat ran"]) == pytest.approx(200 / 3)
    # Porter stemming: cats -> cat, running -> run
    assert rouge1(["cats running"], ["cat run"]) == pytest.approx(100.0)
    # best of several references: "a b" vs "a b c d" has P = 1, R = 1/2 -> F = 2/3
    assert rouge1(["a b"], [["x", "a b c d"]]) == pytest.approx(200 / 3)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="one entry of references per prediction"):
        bleu(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="sources"):
        sari(["a"], ["a", "b"], [["a"], ["b"]])
