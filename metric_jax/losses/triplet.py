"""Placeholder: filled in by the loss work in progress."""
