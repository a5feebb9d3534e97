"""``python _launch.py ARGS`` = ``contrastlab ARGS`` with the training commands listed (fixture for torchrun tests)."""

import contrastlab.cli as cli

NAME = "contrastlab.training.commands"
if NAME not in cli._COMMAND_MODULES:
    cli._COMMAND_MODULES += (NAME,)
raise SystemExit(cli.main())
