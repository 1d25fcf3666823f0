"""``python -m reprkit ...`` runs the command line (see :mod:`reprkit.cli`)."""

import sys

from .cli import main

sys.exit(main())
