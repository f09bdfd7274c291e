"""``python -m flame_core``: see flame_core.cli."""

import sys

from flame_core.cli import main

sys.exit(main())
