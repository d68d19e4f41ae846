"""Benchmarks: one script per figure of issue 5, run against real nodes on loopback (`make bench`)."""
