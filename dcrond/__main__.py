"""``python -m dcrond`` starts the daemon."""

from __future__ import annotations

from dcrond.daemon import main

if __name__ == "__main__":
    raise SystemExit(main())
