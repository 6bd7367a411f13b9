"""Command-line entry points: absl flags in, checkpoints, summaries, metrics out."""
