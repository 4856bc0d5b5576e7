"""Imports every module that adds command groups to the CLI (kept in one place)."""
