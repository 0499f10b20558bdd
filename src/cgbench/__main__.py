"""``python -m cgbench`` is the ``cgbench`` command (what the workflow rules call)."""

import sys

from cgbench.cli import main

sys.exit(main())
