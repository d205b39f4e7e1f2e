"""Model components of the ScaleZero world model (MoE feed-forward layer, ...)."""
