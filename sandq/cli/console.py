"""The consoles commands print to: results on stdout, everything else on stderr."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
