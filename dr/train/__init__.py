"""Training: streaming data from shards, losses, the loops on accelerate, checkpoints, evaluation (reads shards
and uses dr/models; nothing of render, pipeline or labeling)."""
