"""The error and warning types that mean "the input is wrong" rather than "harmonia is broken".

Library functions raise :class:`UserError` for unusable options and data (before any long
work starts); the command line prints it as one line ``error: ...`` and exits with code 2.
It is a ``ValueError``, so ``except ValueError`` keeps working for Python callers.
:class:`HarmoniaWarning` flags results that are computed but probably not what the user
meant (e.g. a model whose classes are not the dataset's); the CLI prints each once.

Example:
    >>> try:
    ...     raise UserError("--size must be >= 1, got 0")
    ... except ValueError as e:
    ...     print(e)
    --size must be >= 1, got 0
"""

from __future__ import annotations


class UserError(ValueError):
    """An unusable option or input; the CLI reports it as ``error: <message>``, exit code 2."""


class HarmoniaWarning(UserWarning):
    """A result that is computed but likely meaningless as asked; the CLI prints ``warning: ...`` once."""
