"""The torch.optim adapter: ``ChainOptimizer`` and what it needs to meet torch's contract (options,
routing, state, checkpoints, distributed training)."""
