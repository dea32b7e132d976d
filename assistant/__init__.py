"""reverie assistant package."""
