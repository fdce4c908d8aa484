"""`python -m zdd` is the `zdd` command."""

from .cli import entry

entry()
