"""Test and benchmark support: tolerances, the benchmark timer, random inputs, synthetic checkpoints."""
