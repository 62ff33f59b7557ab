"""Adapters: translate a framework's I/O into core decisions and carry them out."""
