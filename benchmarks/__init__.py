"""Speed and memory benchmarks; `python -m benchmarks` runs them all and prints one table."""
