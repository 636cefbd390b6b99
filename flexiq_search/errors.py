"""Errors a user can fix: the CLI prints them as one line and exits with code 2."""


class FlexiqError(Exception):
    """Bad input (unknown name, missing or corrupt file, out-of-range value)."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type where the message is empty (torch
    raises bare EOFError on an empty file)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class BackendUnavailable(FlexiqError):
    """A latency backend cannot run on this machine (the reason is the message). Defined here, not in
    `latency`, so the CLI can catch it without importing torch."""
