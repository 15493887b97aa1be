"""``python -m xvla ...`` is the ``xvla`` command."""

import sys

from .cli import main

sys.exit(main())
