"""reverie common: the floor every package stands on — small stdlib-only helpers.

memory/, lora/ and quant/ may not import each other, so what all of them need lives here, once:
atomic file writes (`common.files`) and the OpenMP thread policy (`common.threads`).
common/ imports nothing of ours and nothing heavy; keep it that small.
"""
