"""dcrond: distributed cron.

The same daemon runs on every host; hosts agree through a Raft log on one job
table and every due run happens exactly once, on one suitable host.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
