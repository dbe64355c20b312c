"""``python -m experiments.studies``: see :mod:`experiments.studies`."""

import sys

from experiments.studies import main

sys.exit(main())
