"""The sample schema, shard writer and reader, validation: the one place that knows the on-disk format."""
