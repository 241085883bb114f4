"""Placeholder: this strategy module is being written (issue 9)."""
