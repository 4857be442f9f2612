"""``python -m securesession``: the same as the ``securesession`` console script."""

from securesession.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
