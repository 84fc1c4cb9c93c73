"""``python -m heldout`` (also what ``torchrun -m heldout`` runs)."""

import sys

from heldout.cli import main

sys.exit(main())
