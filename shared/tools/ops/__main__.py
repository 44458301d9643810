"""`python -m shared.tools.ops`: the operator's commands (shared/tools/ops/cli.py)."""

import sys

from shared.tools.ops.cli import main

sys.exit(main())
