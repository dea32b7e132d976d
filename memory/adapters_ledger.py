"""Adapter versions and sleep runs in the ledger: lineage, status, metrics. The files themselves
are owned by lora/ and assistant/; these rows say which version is promoted."""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from .ledger import Ledger, LedgerError, new_id, now

# withdrawn: trained on something the user later forgot; its files are deleted, never served
STATUSES = ("candidate", "promoted", "rejected", "retired", "failed", "withdrawn")


@dataclass
class AdapterRow:
    id: str
    parent: str
    status: str
    strategy: str
    trainer: str
    model: str
    base_sha256: str
    dataset_hash: str
    fact_ids: str
    feedback_ids: str
    path: str
    gguf: str
    metrics: str
    gate: str
    created: float
    promoted: float
    served: str = ""  # the merged model file chat serves; "" = the runtime LoRA (assistant.served)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k in ("fact_ids", "feedback_ids", "metrics", "gate"):
            d[k] = json.loads(d[k] or "null")
        return d


class AdapterLedger:
    def __init__(self, ledger: Ledger):
        self.db = ledger.db

    def new_version_id(self) -> str:
        n = self.db["adapters"].count + 1
        return f"v{n:03d}-{new_id('a')[2:8]}"

    def add(self, **fields) -> AdapterRow:
        row = dict(parent="", status="candidate", strategy="", trainer="", model="",
                   base_sha256="", dataset_hash="", fact_ids="[]", feedback_ids="[]", path="",
                   gguf="", metrics="{}", gate="{}", created=now(), promoted=0.0, served="")
        row.update(fields)
        for k in ("fact_ids", "feedback_ids", "metrics", "gate"):
            if not isinstance(row[k], str):
                row[k] = json.dumps(row[k])
        with self.db.atomic():
            self.db["adapters"].insert(row)
        return AdapterRow(**row)

    def get(self, aid: str) -> AdapterRow:
        rows = list(self.db["adapters"].rows_where("id = ? or id like ?", [aid, aid + "-%"]))
        if len(rows) != 1:
            raise LedgerError(f"unknown adapter version {aid!r}; list them with `reverie adapters ls`.")
        return AdapterRow(**rows[0])

    def list(self, model: str | None = None) -> list[AdapterRow]:
        where, args = ("model = ?", [model]) if model else (None, [])
        return [AdapterRow(**r) for r in self.db["adapters"].rows_where(where, args, order_by="created")]

    def promoted(self, model: str) -> AdapterRow | None:
        rows = list(self.db["adapters"].rows_where("model = ? and status = 'promoted'", [model]))
        return AdapterRow(**rows[0]) if rows else None

    def set_status(self, aid: str, status: str, **extra) -> None:
        if status not in STATUSES:
            raise LedgerError(f"unknown status {status!r}")
        with self.db.atomic():
            self.db["adapters"].update(aid, {"status": status, **extra})

    def promote(self, aid: str) -> AdapterRow:
        """Make aid the promoted version of its model; the previous one is retired. One transaction."""
        row = self.get(aid)
        with self.db.atomic():
            self.db.execute("update adapters set status = 'retired' where model = ? and status = 'promoted'",
                            [row.model])
            self.db["adapters"].update(row.id, {"status": "promoted", "promoted": now()})
        return self.get(row.id)

    def demote_all(self, model: str) -> None:
        with self.db.atomic():
            self.db.execute("update adapters set status = 'retired' where model = ? and status = 'promoted'",
                            [model])

    def remove(self, aid: str) -> AdapterRow:
        row = self.get(aid)
        if row.status == "promoted":
            raise LedgerError(f"{row.id} is the promoted adapter; `reverie adapters rollback` first.")
        with self.db.atomic():
            self.db["adapters"].delete(row.id)
        return row

    # --- sleep runs ------------------------------------------------------------------------
    def start_run(self, strategy: str) -> str:
        rid = new_id("run")
        with self.db.atomic():
            self.db["sleep_runs"].insert({"id": rid, "started": now(), "finished": 0.0, "status": "running",
                                          "strategy": strategy, "adapter_id": "", "report_path": "",
                                          "summary": "{}"})
        return rid

    def finish_run(self, rid: str, status: str, adapter_id: str = "", report_path: str = "",
                   summary: dict | None = None) -> None:
        with self.db.atomic():
            self.db["sleep_runs"].update(rid, {"finished": now(), "status": status, "adapter_id": adapter_id,
                                               "report_path": report_path,
                                               "summary": json.dumps(summary or {})})

    def close_stale_runs(self) -> list[str]:
        """Mark runs still 'running' as 'interrupted' (call only while holding the sleep lock:
        then no live process owns them). Returns their ids."""
        rows = [r["id"] for r in self.db["sleep_runs"].rows_where("status = 'running'")]
        if rows:
            with self.db.atomic():
                for rid in rows:
                    self.db["sleep_runs"].update(rid, {"finished": now(), "status": "interrupted"})
        return rows

    def runs(self, limit: int = 20) -> list[dict]:
        return list(self.db["sleep_runs"].rows_where(order_by="started desc", limit=limit))
