"""``python -m adapter`` is the ``nvp-adapter`` command."""

from adapter.cli import main

if __name__ == "__main__":
    main()
