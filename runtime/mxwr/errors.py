"""The one error type the runtime raises for bad input; the CLI prints its message on one line."""


class MxwError(Exception):
    """A problem with the user's input (bundle, audio, options), reported as one line."""

    def __str__(self) -> str:
        # One line, whatever the cause said: the CLI contract is a single-line error.
        return " ".join(super().__str__().split())


class BundleError(MxwError):
    """The bundle is missing, corrupt, truncated, or of a format this runtime cannot read."""


class AudioError(MxwError):
    """The audio file is missing or cannot be decoded."""
