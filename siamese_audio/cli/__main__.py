"""``python -m siamese_audio.cli``: the console script without its launcher."""

import sys

from siamese_audio.cli import main

sys.exit(main())
