"""Benchmarks of flame_core (run as scripts: python bench/speed.py). A package only so that the book's
efficiency chapter can import their measuring functions (from bench import speed) from the repository root."""
