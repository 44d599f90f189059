"""Benchmarks of kvstore against peer libraries; ``python -m bench`` runs them.

See bench/README.md for the method and bench/RESULTS.md for the latest figures.
"""
