"""The command-line apps: thin layers that parse, validate and call into the packages."""
