"""Probes: score a model on the general-ability tasks after every stage (knowledge, reasoning, reading, bias,
and the learned instruction tasks).

    python -m raycf.probe --model PATH [--adapter DIR] --suite knowledge,reasoning [--shots K] [--limit N]

Multiple choice is lm-evaluation-harness 0.4.13's log-likelihood scoring for a HF model, reproduced number
for number (tests/test_probe_peer.py runs both):
  - context = the k few-shot examples, each `template.format(**row) + " " + answer + "\\n\\n"`, then
    `template.format(**row)`; continuation = " " + choice;
  - trailing whitespace of the context moves to the continuation; causal models encode context+continuation
    as ONE string and take the tokens after len(encode(context)) as the continuation; seq2seq models encode
    the two apart (the encoder gets the context, the decoder scores the continuation);
  - acc = argmax of the summed log-probs, acc_norm = argmax of log-prob / len(choice) in characters, WITHOUT
    the " " delimiter.
The k examples are drawn once per task with random.Random(seed) from its fewshot rows: the same k for every
question, so the few-shot prefix is shared.

Faster than lm-eval by computing shared work once: the few-shot prefix is run once per task and its KV cache
reused for every question, each question's context is run once and all its choices are scored against its
cache in one batch, and questions are batched by length. The prefix is shared only as far as an item's own
tokens equal the prefix's tokens (where a BPE merges the prefix's last tokens with the question's first,
up to the merge; items sharing nothing are scored whole). The token ids fed to the model are exactly
lm-eval's, so only float rounding differs (~1e-6).

Pairs (CrowS-Pairs, as lm-eval's crows_pairs task): log-likelihood of each whole sentence (empty context =
the BOS token); pct_stereotype = fraction of pairs whose sent_more is more likely (0..1, as lm-eval reports
it), also per bias type as `pct_stereotype/<bias_type>`, and likelihood_diff = mean |difference|.
Generation: greedy decoding, batched, scored with the task's metrics from raycf.metrics.

Distributed: with world_size > 1 and torch.distributed initialised, each rank scores a balanced, disjoint
slice of every task and the per-item results are all-gathered, so every rank returns the full results.
Ranks run different numbers of forward passes, so no forward may be a collective: a DDP wrapper is taken
off, and an FSDP2 model has its parameters gathered once before probing (one collective, all ranks) and
resharded after (see `probing`). All ranks must call run_probes together, with the same tasks.

Modules: engine (lm-eval's tokenisation and the log-likelihood scorer with shared-prefix KV reuse), tasks
(multiple choice, pairs, generation: rows in, metrics out), shard (splitting a task over Ray Train workers),
run (a raycf.data Task or a list of them on a model), and the CLI in __main__.
"""
