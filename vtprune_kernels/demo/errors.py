"""The error the commands raise for bad user input (a ValueError, so library callers can catch it
as one; the CLI turns it into a one-line message and exit status 2)."""


class DemoInputError(ValueError):
    """A command-line argument or the file/folder it names is not usable."""
