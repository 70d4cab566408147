"""The command line (``trio_bridge/cli/``), run as a user types it."""
