"""Episode pipelines: Omniglot classification and MovieLens cold-start rating."""
