"""PyInstaller entry point of the console executable `fgdesk` (see fgdesk.spec)."""
import multiprocessing
import sys

if __name__ == "__main__":
    # Data-loader worker processes re-run this script in a frozen build; this hands
    # them to multiprocessing before fgdesk (and torch) are imported.
    multiprocessing.freeze_support()

    from fgdesk.cli import main

    sys.exit(main())
