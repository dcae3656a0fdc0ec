"""PyInstaller entry point of the windowed executable `fgdesk-app` (see fgdesk.spec)."""
import multiprocessing
import os
import sys

if __name__ == "__main__":
    multiprocessing.freeze_support()
    # A windowed build on Windows and macOS has no console: sys.stdout and
    # sys.stderr are None there, and progress bars or warnings would crash on them.
    for stream in ("stdout", "stderr"):
        if getattr(sys, stream) is None:
            setattr(sys, stream, open(os.devnull, "w", encoding="utf-8"))

    from fgdesk.gui.app import main

    sys.exit(main())
