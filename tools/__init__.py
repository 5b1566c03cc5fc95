"""Command-line tools: scripts run as ``python tools/<name>.py``; importable as ``tools.<name>`` (tests)."""
