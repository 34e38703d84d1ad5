"""``python -m amf``: dispatch to the ``amf.cli`` sub-commands."""

import sys

from amf.cli import main

if __name__ == "__main__":
    sys.exit(main())
