"""The one error type the CLI turns into a one-line message instead of a traceback."""


class EclipError(Exception):
    """Bad input or an impossible request: the message says what is wrong and what to do."""
