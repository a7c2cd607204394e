#!/usr/bin/env python
"""Same as the ``cardd assess`` console script (see ``cardd assess --help``, which also lists the exit codes):

    python tools/assess.py --config-file CFG --weights W [--classifier-weights C] INPUTS... --output DIR [KEY VALUE ...]
"""
import sys

from cardd_cli import main

if __name__ == "__main__":
    sys.exit(main(["assess"] + sys.argv[1:]))
