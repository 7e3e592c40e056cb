"""``python -m jaxablate`` runs the command line."""

import sys

from jaxablate.cli import main

sys.exit(main())
