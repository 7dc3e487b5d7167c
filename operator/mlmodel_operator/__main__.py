"""`python -m mlmodel_operator`: the same as `mlmodel operator`."""

import sys

from mlmodel_operator.main import main

sys.exit(main())
