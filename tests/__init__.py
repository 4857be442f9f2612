"""securesession's test suite.

A package, like each of its directories, so that every module has one name for pytest and
mypy alike (``tests.cli.conftest``, ``tests.cli.clihelp``): several directories have a
``conftest.py``. Helpers are imported relatively (``from ..secretscan import leaks``).
"""
