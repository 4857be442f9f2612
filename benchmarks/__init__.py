"""Benchmarks of securesession against hand-configured plain ``requests`` sessions.

Run one with ``python -m benchmarks.<name>`` (or ``python benchmarks/<name>.py``), or
all with ``python -m benchmarks.run_all [--quick]``; see README.md. Importing this
package imports nothing else, so a baseline child process stays free of securesession.
"""
