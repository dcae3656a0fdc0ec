import sys

from fgdesk.cli import main

sys.exit(main())
