"""The decisions of the sync: plain functions that take data and return data (and the thin I/O around them)."""
