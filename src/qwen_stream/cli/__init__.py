"""The terminal front end: `qwen-stream` and its subcommands, the terminal chat, the options every command shares."""
