"""``python -m iommulab``."""

from iommulab.cli import main

raise SystemExit(main())
