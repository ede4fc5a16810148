"""The one exception type that means "the user asked for something wrong"."""


class UserError(Exception):
    """Bad input. Its message is one line: what is wrong and what to do about it.

    The command-line apps print it as ``error: <message>`` and exit with status 2; every
    layer may raise it, none should print a traceback for it.
    """
