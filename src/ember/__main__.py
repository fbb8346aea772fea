"""`python -m ember`: the same as the `ember` command (and named so in help and completion)."""

from ember.cli.main import app

app(prog_name="ember")
