#!/usr/bin/env python3
"""Rebuilds a walkthrough report from its out dir's files:

    python3 loadtest/report.py OUTDIR

writes OUTDIR/report.html (slides) and OUTDIR/charts/ID.{svg,png}; see
hslab/report.py."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hslab.report import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
