"""One trial = one model, warm start, hyperparameter set and task order, run as one Ray Train job.

    python -m raycf.trial --space search_spaces/default.yaml [--set optim.lr=3e-4 ...]

Modules in the order a trial uses them:
  preflight    every check that can be made before Ray starts (data, model folder, resources)
  plan         TrialPlan: the cache keys of the warm start, the stages and the probe rows
  run          the driver: open the MLflow run, start a TorchTrainer (launch) or use a worker pool (pool)
  stages       the workers: StageRunner.setup(), then per stage train, checkpoint, probe, record
  warm_start   the weights the stages start from; checkpoint: models and stage checkpoints
  results      a stage's metrics and the objective; record: the one owner of the trial's MLflow run
"""
