"""The kit's two exceptions. Imports nothing; every other module may import it."""

class SNAError(ValueError):
    """Bad input to the kit: the message names the problem and what to do."""


class ModelUnavailableError(RuntimeError):
    """A model or data set could not be fetched (no network, not cached)."""
