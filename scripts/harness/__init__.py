"""Harnesses run by the scripts and the tests: the hostile-input corpus (``hostile``)."""
