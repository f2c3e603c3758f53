"""The swarm page: a live, read-only dashboard of one run, served from its journal.

`autoresearch dashboard` (swarm.commands.dashboard) and `autoresearch run --dashboard` serve it.
Parts: `source` reads the run directory (journal, heartbeat, logs, git for diffs) and never writes;
`figures` builds the plotly charts from the run's table of experiments (swarm.table); `snapshot`
assembles what the page shows as one JSON document; `server` is the aiohttp app (it binds
127.0.0.1 by default and serves plotly.min.js from the installed plotly package, no CDN). The
page itself is `static/` (it renders every string from agents, logs and LLMs as text, never as
markup). Not covered: Ray's own dashboard and metrics (swarm.metrics); driving a browser (the
browser test's tests/headless_chromium.py).
"""

DEFAULT_HOST = "127.0.0.1"  # this machine only; another interface is the user's explicit choice
DEFAULT_PORT = 8050
# Nothing heavy is imported here: the CLI imports this package for the defaults above on every
# command; `swarm.dashboard.server.DashboardServer` (aiohttp, pandas, plotly) is imported when served.

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT"]
