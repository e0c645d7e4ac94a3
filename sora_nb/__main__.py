"""``python -m sora_nb`` is the ``sora-nb`` command."""

import sys

from .cli import main

sys.exit(main())
