"""The terminal: one rich console for output and one for diagnostics."""

from rich.console import Console

out = Console()
err = Console(stderr=True)
