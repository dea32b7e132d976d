"""reverie lora package."""
