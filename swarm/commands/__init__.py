"""CLI subcommands. Each module has `register(subparsers)`, which adds its parser and sets
`func(args) -> int`. Modules stay light at import: heavy imports happen inside `func`."""
