"""One exception type for user mistakes; the CLI turns it into one line and exit code 2."""


class UserError(Exception):
    """A bad input value. `field` names the option or key, the message says what is allowed."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message
