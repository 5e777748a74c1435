"""User-facing errors: bad input or bad config. Entry points print them as one line and exit 2.

A model package derives its own (e.g. ``jaxbrain.data.DataError``) from these so that the engine's
command line (``jaxtrain.cli``) reports them without a traceback.
"""


class UserError(ValueError):
  """Something the user can fix: a file, a config field or a value. The message names it."""


class ConfigError(UserError):
  """A config file, variant or override is invalid."""


class DataError(UserError):
  """An input file, table or array is missing, unreadable or invalid."""
