"""`python -m mtfer.cli`: the `mtfer` command, as background training jobs start it."""

import sys

from mtfer.cli import main

sys.exit(main())
