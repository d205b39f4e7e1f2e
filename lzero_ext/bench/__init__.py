"""Benchmarks printed as tables (not timed tests): ``python -m lzero_ext.bench <name> [args]``.

The registered names live in ``lzero_ext.bench.__main__.BENCHMARKS``.
"""
