"""The store contract suite (``test_contract.py``), run against every backend."""
