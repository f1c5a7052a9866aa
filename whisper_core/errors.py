"""The error every checkpoint reader raises, kept apart so that readers and loaders share it without
importing each other."""


class CheckpointError(Exception):
    """A model file that is missing, truncated or of another kind; the message says what to do."""
