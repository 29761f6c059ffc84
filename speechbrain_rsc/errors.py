"""Errors a user can act on, and how the recipe scripts report them.

Every error the library raises on purpose for a user's input or
environment (a refused run folder, a missing bank or weight file, a bad
``--k``, a full disk, ...) is a :class:`RecipeError`, whatever else it is
(a ``ProvenanceMismatch`` is also a ``RuntimeError``, a missing bank also
a ``FileNotFoundError``). The recipe scripts run under
:func:`reported_errors`: such an error prints its message alone on stderr
and exits with status 2; any other exception is a bug and keeps its
traceback. ``RSC_DEBUG=1`` shows the traceback of a RecipeError too.

Example
-------
>>> class Refused(RecipeError, ValueError):
...     pass
>>> isinstance(Refused("x"), ValueError)
True
"""

import os
import sys
from contextlib import contextmanager

DEBUG_VARIABLE = "RSC_DEBUG"
EXIT_STATUS = 2


class RecipeError(Exception):
    """Raised on purpose: the input or environment is wrong, not the
    code; the message says what differs and how to proceed.
    """


class OptionError(RecipeError, ValueError):
    """An option value the recipe cannot use (named, with what to set)."""


class SelectionError(OptionError):
    """A teacher selection that cannot be made (``--k``, seeds, mode)."""


class WriteError(RecipeError, OSError):
    """A file or folder that cannot be written (full disk, read-only)."""


@contextmanager
def reported_errors():
    """Turn a :class:`RecipeError` into its message and exit status 2.

    Unless ``RSC_DEBUG`` is set (to anything but ``0`` or empty), in which
    case it propagates with its traceback.

    Example
    -------
    >>> debug = os.environ.pop(DEBUG_VARIABLE, None)
    >>> try:
    ...     with reported_errors():
    ...         raise RecipeError("no logit banks in results/bts")
    ... except SystemExit as done:
    ...     print(done.code)
    2
    >>> if debug is not None:
    ...     os.environ[DEBUG_VARIABLE] = debug
    """
    try:
        yield
    except RecipeError as error:
        if os.environ.get(DEBUG_VARIABLE, "") not in ("", "0"):
            raise
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.exit(EXIT_STATUS)
