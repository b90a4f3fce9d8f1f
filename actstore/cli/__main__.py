"""``python -m actstore.cli`` runs the command line."""

from actstore.cli import main

main()
