"""``python -m medrobust ...`` (and ``torchrun ... -m medrobust evaluate ...``): the command-line interface."""

from medrobust.cli.main import main

if __name__ == "__main__":
    raise SystemExit(main())
