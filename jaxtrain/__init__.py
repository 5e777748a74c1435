"""The shared training engine: config, mesh and sharding, train loop, checkpoints, metrics."""
