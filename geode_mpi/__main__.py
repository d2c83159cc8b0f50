"""``python -m geode_mpi``: see geode_mpi.runner."""

import sys

from geode_mpi.runner import main

sys.exit(main())
