"""`python -m speechrep COMMAND ...`: the `speechrep` console script."""
from speechrep.cli import main

raise SystemExit(main())
