"""Entry point for ``python -m posecli``."""

from posecli.cli import main

if __name__ == "__main__":
    main()
