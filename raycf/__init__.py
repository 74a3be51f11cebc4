"""raycf: how much does an LLM forget when fine-tuned on task after task? A Ray Tune sweep over
continual fine-tuning trials (Ray Train, FSDP2, PEFT LoRA), probed after every stage, tracked in MLflow.

    python -m raycf.sweep                  # the offline default sweep
    python -m raycf.trial --space search_spaces/default.yaml --set optim.lr=1e-3
"""
__version__ = "0.1.0"
