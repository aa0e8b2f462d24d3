"""Benchmarks: each measures our path beside a naive baseline in the same run."""
