"""The study's own datasets from the Hugging Face hub, mapped to raycf's row schema: used only when a user asks
(data.hub: true, or source="hub"); never by default or in tests (they need the network)."""
from __future__ import annotations

from raycf.errors import DataError

HUB_KEYS = {"path", "name", "split", "fewshot_split", "map"}


def hub_rows(spec: dict) -> tuple[list[dict], list[dict]]:
    hub = spec.get("hub")
    if not hub:
        raise DataError(f"task {spec['name']} names no hub dataset; use source='shipped' or a file")
    pool = hub_split(spec, hub["fewshot_split"]) if hub.get("fewshot_split") else []
    return hub_split(spec, hub["split"]), pool


def hub_split(spec: dict, split: str) -> list[dict]:
    from datasets import load_dataset  # network: never called by default or in tests
    hub = spec["hub"]
    ds = load_dataset(hub["path"], hub.get("name"), split=split)
    mapper = HUB_MAPS[hub["map"]]
    return [r for r in (mapper(dict(row), ds) for row in ds) if r is not None]


def _map_mmlu(r, ds):
    return {"subject": r["subject"], "question": r["question"].strip(), "choices": list(r["choices"]),
            "answer": int(r["answer"])}


def _map_boolq(r, ds):
    return {"passage": r["passage"], "question": r["question"], "choices": ["no", "yes"], "answer": int(r["answer"])}


def _map_piqa(r, ds):
    return {"goal": r["goal"], "choices": [r["sol1"], r["sol2"]], "answer": int(r["label"])}


def _map_mathqa(r, ds):
    import re  # options look like "a ) 38 , b ) 27.675 , c ) 30 , d ) 15 , e ) 20"; parsed as lm-eval does
    choices = [c[4:].rstrip(" ,") for c in re.findall(r"[abcd] \) .*?, |e \) .*?$", r["options"])]
    return {"problem": r["Problem"], "choices": choices, "answer": "abcde".index(r["correct"])}


def _map_race(r, ds):
    return {"article": r["article"], "question": r["question"], "choices": list(r["options"]),
            "answer": "ABCD".index(r["answer"])}


def _map_crows(r, ds):
    bt = r["bias_type"]
    if isinstance(bt, int):
        bt = ds.features["bias_type"].int2str(bt)
    return {"sent_more": r["sent_more"], "sent_less": r["sent_less"], "bias_type": str(bt)}


def _map_wiki_auto(r, ds):
    return _instruction("Simplify the following sentence.", r["normal_sentence"], r["simple_sentence"],
                        references=[r["simple_sentence"].strip()])


def _map_empathetic(r, ds):
    return _instruction("Respond to the speaker with empathy.", r["prompt"].replace("_comma_", ","),
                        r["utterance"].replace("_comma_", ","))


def _map_eli5(r, ds):
    return _instruction("Ask a curious question about this statement.", r["answer"][:400], r["question"])


def _map_esnli(r, ds):
    label = ["entailment", "neutral", "contradiction"][int(r["label"])] if int(r["label"]) >= 0 else None
    if label is None:
        return None
    return _instruction("Explain the label.",
                        f"Premise: {r['premise']} Hypothesis: {r['hypothesis']} Label: {label}", r["explanation_1"])


def _map_gigaword(r, ds):
    words = r["summary"].split()
    word = max(words, key=len) if words else ""
    return _instruction(f"Write a headline for the article that includes the word \"{word}\".", r["document"],
                        r["summary"])


def _instruction(instruction, inp, out, **extra):
    return {"instruction": instruction, "input": inp.strip(), "output": out.strip(), **extra}


HUB_MAPS = {"mmlu": _map_mmlu, "boolq": _map_boolq, "piqa": _map_piqa, "mathqa": _map_mathqa, "race": _map_race,
            "crows_pairs": _map_crows, "wiki_auto": _map_wiki_auto, "empathetic_dialogues": _map_empathetic,
            "eli5": _map_eli5, "esnli": _map_esnli, "gigaword": _map_gigaword}
