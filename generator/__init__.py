"""What does a deep CNN learn? — precompute CNN visualisations and write a MkDocs site."""

__version__ = "0.1.0"
