"""Errors a user can act on. Every message says what is wrong and what to do."""


class DistillscopeError(Exception):
    """Base for errors shown to the user as a message, never as a traceback."""

    def __init__(self, what: str, hint: str = ""):
        self.what = what
        self.hint = hint
        super().__init__(f"{what} {hint}".strip())


class ModelLoadError(DistillscopeError):
    """A teacher model could not be loaded."""


class DocumentError(DistillscopeError):
    """Input documents could not be read."""


class CacheError(DistillscopeError):
    """An activation cache is missing, corrupt or belongs to another model/setting."""


class Cancelled(DistillscopeError):
    """The user cancelled a long task."""

    def __init__(self, what: str = "Cancelled by the user.", hint: str = ""):
        super().__init__(what, hint)
