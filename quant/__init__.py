"""reverie quant package."""
