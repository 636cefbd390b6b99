"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class FlexiqError(Exception):
    """Bad input (unknown name, missing or corrupt file, out-of-range value)."""
