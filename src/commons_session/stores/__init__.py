"""Stores: one contract in ``base.py``, one module per backend."""
