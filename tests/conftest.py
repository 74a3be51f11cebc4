"""Shared fixtures: offline env, a per-session cache dir for built models, tiny tokenizer and rows."""
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "60")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    """One cache of built models for the whole test session (RAYCF_CACHE), also seen by Ray workers."""
    path = os.environ.get("RAYCF_TEST_CACHE") or str(tmp_path_factory.mktemp("raycf-cache"))
    os.environ["RAYCF_CACHE"] = path
    return path


def toy_rows(n: int = 64, seed: int = 0) -> list[dict]:
    """Instruction rows of varied length (the response varies 1-4 repeats), deterministic."""
    import random
    rng = random.Random(seed)
    words = "the quick brown fox jumps over a lazy dog near river bank today".split()
    rows = []
    for i in range(n):
        text = " ".join(rng.choice(words) for _ in range(rng.randint(2, 6)))
        rows.append({"instruction": "Repeat the input.", "input": text, "output": " ".join([text] * (1 + i % 4))})
    return rows


@pytest.fixture(scope="session")
def toy_tokenizer():
    from raycf.data.template import prompt
    from raycf.models import build_tokenizer
    texts = [prompt(r) + r["output"] for r in toy_rows(200, seed=1)]
    return build_tokenizer(texts, vocab_size=400)
