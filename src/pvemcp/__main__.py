"""`python -m pvemcp` is the `pvemcp` command."""

import sys

from pvemcp.cli import main

sys.exit(main())
