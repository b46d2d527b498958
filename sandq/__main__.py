"""``python -m sandq`` is the ``sandq`` command."""

from sandq.cli import app

app()
