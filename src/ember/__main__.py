"""`python -m ember`: the same as the `ember` command."""

from ember.cli.main import app

app()
