"""`python -m shared.ops`: the operator's commands (shared/ops/cli.py)."""

import sys

from shared.ops.cli import main

sys.exit(main())
