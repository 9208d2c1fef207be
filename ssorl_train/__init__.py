"""ssorl_train: offline RL (TD3+BC, IQL, CQL, Decision Transformer) on relabelled stores."""
