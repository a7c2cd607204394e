#!/usr/bin/env python
"""Same as the ``cardd assess`` console script (see cardd_d2/cli.py):

    python tools/assess.py --config-file CFG --weights W [--classifier-weights C] INPUTS... --output DIR
"""
import sys

from cardd_d2.cli import main

if __name__ == "__main__":
    sys.exit(main(["assess"] + sys.argv[1:]))
