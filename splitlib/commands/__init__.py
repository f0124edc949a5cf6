"""The ``splitreason`` subcommands, one module each with ``add_cli(subparsers)``; ``splitlib.cli`` lists them."""
