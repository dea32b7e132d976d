"""reverie memory package."""
