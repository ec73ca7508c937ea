"""`python -m llmux_site.simulator serve …` runs the same as the `llmux-sim` console script."""

from __future__ import annotations

import sys

from llmux_site.simulator.cli import main

if __name__ == "__main__":
    sys.exit(main())
