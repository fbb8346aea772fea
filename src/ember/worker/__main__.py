"""`python -m ember.worker`: the replica process entry point (started by a runtime)."""

import sys

from ember.worker.main import main

sys.exit(main())
