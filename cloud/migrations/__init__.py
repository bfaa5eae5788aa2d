"""Versioned schema migrations, applied in order by :mod:`mimamori.cloud.migrate`.

Files are named ``NNNN_name.sql`` (every storage flavour) or
``NNNN_name.<storage>.sql`` (only on ``postgresql`` or ``timescaledb``); a version may have
one common file or one file per flavour, never both. Each version runs in one
transaction. Never edit a file once released: add a new version instead.
"""
