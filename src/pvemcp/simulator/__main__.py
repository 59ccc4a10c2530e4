"""`python -m pvemcp.simulator`: the same as `pvemcp simulate`."""

from .server import main

raise SystemExit(main())
