"""Models, data loading for training and the training loops (reads shards; nothing of render or pipeline)."""
