import sys

from mlmodel_cli import main

sys.exit(main())
