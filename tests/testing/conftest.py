"""The tests of ``securesession.testing`` drive the pytest plugin through ``pytester``."""

pytest_plugins = ["pytester"]
