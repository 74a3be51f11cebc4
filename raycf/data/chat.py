"""Conversation rows and chat templates: the `messages` format ({"messages": [{"role", "content"}, ...]}) and
ShareGPT ({"conversations": [{"from", "value"}, ...]}), and a row as the tokenizer's chat template renders it, with
the loss on every assistant turn (data.template: chat).

The tokens of a conversation are the chat template's text cut at each assistant turn: the text up to the turn with
the generation prompt is context, the turn's own text (its content and the template's end-of-turn marks) is target.
Each piece is tokenized on its own, so a mask never splits a token; a template whose rendering of a shorter
conversation is not a prefix of the longer one's cannot be cut this way and is refused.
"""
from __future__ import annotations

from raycf.errors import DataError

ROLES = ("system", "user", "assistant")
SEQ2SEQ = "data.template chat is for causal models; use data.template: alpaca with seq2seq"
SHAREGPT_ROLES = {"system": "system", "human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant"}


def is_conversation(row) -> bool:
    return isinstance(row, dict) and ("messages" in row or "conversations" in row)


def messages(row: dict) -> list[dict]:
    """The row's turns as [{"role", "content"}], ShareGPT's from/value mapped to role/content."""
    if "messages" in row:
        return [{"role": m["role"], "content": m["content"]} for m in row["messages"]]
    return [{"role": SHAREGPT_ROLES[t["from"]], "content": t["value"]} for t in row["conversations"]]


def conversation_problem(row: dict) -> str | None:
    """The problem with one conversation row (and its fix), or None when it is fine."""
    key = "messages" if "messages" in row else "conversations"
    turns = row[key]
    role_key, text_key, roles = ("role", "content", ROLES) if key == "messages" else ("from", "value",
                                                                                       tuple(SHAREGPT_ROLES))
    if not isinstance(turns, list) or not turns:
        return f"'{key}' must be a non-empty list of turns, e.g. [{{\"{role_key}\": ..., \"{text_key}\": ...}}]"
    for i, t in enumerate(turns):
        if not isinstance(t, dict) or role_key not in t or text_key not in t:
            return f"'{key}'[{i}] must be an object with '{role_key}' and '{text_key}', got {t!r}"[:300]
        if t[role_key] not in roles:
            return f"'{key}'[{i}].{role_key} is {t[role_key]!r}; give one of {', '.join(roles)}"
        if not isinstance(t[text_key], str):
            return f"'{key}'[{i}].{text_key} must be a string, got {type(t[text_key]).__name__}"
    said = [m["role"] for m in messages(row)]
    if "assistant" not in said:
        return f"'{key}' has no assistant turn: nothing to train on; add the assistant's answer"
    if said[-1] != "assistant":
        return f"'{key}' ends with a {said[-1]} turn; end the conversation with the assistant's answer"
    if "system" in said[1:]:
        return f"'{key}': a system turn after the first; put the system prompt first"
    return None


def instruction_messages(row: dict) -> list[dict]:
    """An instruction row {"instruction", "input", "output"} as a user turn and the assistant's answer."""
    user = row["instruction"] + (f"\n\n{row['input']}" if row.get("input") else "")
    return [{"role": "user", "content": user}, {"role": "assistant", "content": row["output"]}]


def with_system(turns: list[dict], system: str) -> list[dict]:
    """data.system_prompt before a conversation that has no system turn of its own."""
    if system and turns[0]["role"] != "system":
        return [{"role": "system", "content": system}, *turns]
    return turns


def render(tok, turns: list[dict], generation_prompt: bool) -> str:
    return tok.apply_chat_template(turns, tokenize=False, add_generation_prompt=generation_prompt)


def check_template(tok, where: str, kind: str = "causal", asks: str = "data.template is chat",
                   off: str = "data.template: alpaca") -> None:
    """One line when a chat template cannot be applied: a seq2seq model, or a tokenizer without one. asks: what
    asks for the template; off: how to go without it."""
    if kind == "seq2seq":
        raise DataError(f"{where}: {SEQ2SEQ}" if off == "data.template: alpaca" else
                        f"{where}: {asks}, but a chat template is for causal models; use {off} with seq2seq")
    if not getattr(tok, "chat_template", None):
        raise DataError(f"{where}: {asks}, but this tokenizer has no chat template; use an instruct model's "
                        f"tokenizer (e.g. smollm2-135m) or {off}")


def encode(tok, turns: list[dict]) -> tuple[list[int], list[int]]:
    """(input_ids, labels) of a conversation in the tokenizer's chat template; labels -100 except on the
    assistant turns (their text and the template's end-of-turn marks)."""
    ignore = -100
    ids, labels, done = [], [], ""
    for i, turn in enumerate(turns):
        if turn["role"] != "assistant":
            continue
        before = render(tok, turns[:i], generation_prompt=True)
        after = render(tok, turns[:i + 1], generation_prompt=False)
        if not before.startswith(done) or not after.startswith(before):
            raise DataError("the tokenizer's chat template renders a conversation so that a shorter one is not a "
                            "prefix of a longer one; raycf cannot put the loss on the assistant turns only: use "
                            "data.template: alpaca or another chat template")
        context = tok(before[len(done):], add_special_tokens=False)["input_ids"]
        target = tok(after[len(before):], add_special_tokens=False)["input_ids"]
        ids += context + target
        labels += [ignore] * len(context) + target
        done = after
    return ids, labels
