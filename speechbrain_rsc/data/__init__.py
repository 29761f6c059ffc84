"""ICBHI parsing, cycle cutting, prompts and the synthetic dataset."""
