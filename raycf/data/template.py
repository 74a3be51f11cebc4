"""The Alpaca-style instruction template the study wraps every task in (PAPER.md, "Setup").

Training puts the loss on the response tokens only: `prompt(row)` is context, `row["output"]` the target.
"""

PROMPT_WITH_INPUT = ("Below is an instruction that describes a task, paired with an input that provides further "
                     "context. Write a response that appropriately completes the request.\n\n"
                     "### Instruction:\n{instruction}\n\n### Input:\n{input}\n\n### Response:\n")
PROMPT_NO_INPUT = ("Below is an instruction that describes a task. Write a response that appropriately "
                   "completes the request.\n\n### Instruction:\n{instruction}\n\n### Response:\n")


def prompt(row: dict) -> str:
    """The context part of an instruction row {"instruction", "input", "output"}."""
    if row.get("input"):
        return PROMPT_WITH_INPUT.format(instruction=row["instruction"], input=row["input"])
    return PROMPT_NO_INPUT.format(instruction=row["instruction"])
