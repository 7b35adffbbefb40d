"""Benchmarks (`mdl-tf bench ...`): figures come from real runs and say which machine produced them."""
