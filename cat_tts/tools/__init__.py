"""Command-line tools: `make_tiny` (offline random checkpoints) and `bench` (speed/memory benchmarks)."""
