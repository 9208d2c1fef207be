"""ssorl_train: offline RL (TD3+BC, IQL, CQL, Decision Transformer) on relabelled stores.

Entry points: `dataset.TrainingData` and `dataset.select_actions` (what to train on),
`algos.make_config` / `algos.make_algorithm`, `loop.train` (the one training loop),
`evaluate.evaluate` / `evaluate.evaluate_checkpoint`, and the `ssorl train` /
`ssorl eval` commands in `cli`. Submodules are imported on use so that this package
stays cheap to import.
"""
