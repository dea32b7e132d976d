"""reverie bench package."""
