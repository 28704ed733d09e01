"""Training recipes: ``base.py`` declares every key with its default; each recipe's ``get_config(arg)``
starts from it and overrides what differs (``arg`` is the text after ':' in ``--config=FILE:ARG``)."""
