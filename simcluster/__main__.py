"""``python -m simcluster``: the command line."""

import sys

from simcluster.cli import main

sys.exit(main())
