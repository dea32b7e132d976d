"""Kept for lora's existing imports: atomic writes live once, in common.files."""
from common.files import atomic_dir, atomic_write_bytes, atomic_write_text

__all__ = ["atomic_dir", "atomic_write_bytes", "atomic_write_text"]
