"""reverie cli package."""
