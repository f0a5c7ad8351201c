"""User-facing errors: one message that names the file or key and the fix, exit status 2."""


class UserError(Exception):
    """Bad input from the user (config value, dataset file, scene name, store).

    The CLI prints the message alone (no traceback) and exits with status 2.
    """

    exit_code = 2
