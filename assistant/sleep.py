"""`reverie sleep`: the nightly consolidation of the day's facts and feedback into a LoRA adapter.

Owns the loop: lock → gather facts/feedback from the ledger → build the dataset → train → export
GGUF → evaluate (personal recall on held-back phrasings, general ability, drift, backward transfer)
→ gate → promote or reject → report. The promoted adapter is only ever switched by one ledger
transaction after its files are complete, so a killed sleep leaves the previous one in place.
"""
from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .errors import ReverieError

Log = Callable[[str], None]
ANCHOR_PROMPTS = 24  # the fewest anchors a night is given (more when its dataset calls for them)
# 3 epochs of a few facts is ~20 steps, which taught the answer form but not the values on the
# 135M model (held-back recall 0/8); DESIGN saw 60 steps memorise 4 facts. Bounded for the night.
MIN_STEPS = 60
MAX_STEPS = 300  # base-model answers mixed into every dataset so the adapter leaves the rest alone


@dataclass
class SleepOptions:
    strategy: str = "retrain"  # retrain: from base on the whole ledger; incremental: continue the promoted adapter
    dry_run: bool = False
    model: str | None = None
    steps: int = 0  # 0: the trainer's epoch-based default
    rank: int = 0
    learning_rate: float = 0.0
    seed: int = 0
    force: bool = False  # train even if nothing is new
    gate: dict = field(default_factory=dict)  # GateConfig overrides
    exclude_questions: tuple[str, ...] = ()  # evaluation probes: never trained on
    general_items: list | None = None  # MCItem list; default: bundled general probe
    general_texts: list | None = None
    eval_probes: list | None = None  # Probe list for personal recall; default: held-back phrasings
    max_general: int = 60
    # bundled short general questions (assistant/data/general_facts.jsonl) the adapter must still
    # answer where the base did; None: the bundled set, cut to $REVERIE_GATE_FACTUAL items if set
    factual_items: list | None = None
    max_probes: int = 64  # held-back questions asked by the gate (facts new tonight first)
    phrasings_per_fact: int = 4
    # after the gate passes the runtime LoRA, also gate the adapter merged into the base at this
    # type and serve that if it passes (assistant.served); "": the merge_on_promote setting
    # (default Q8_0), "none": always the runtime LoRA
    merge: str = ""
    # steps between resumable training checkpoints (0: $REVERIE_CHECKPOINT_EVERY, else TrainConfig's)
    checkpoint_every: int = 0
    # peft: torch on the dequantized GGUF (CPU/CUDA/MPS); mlx: QLoRA on the quantized GGUF itself
    trainer: str = "peft"

    def __post_init__(self):
        if self.strategy not in ("retrain", "incremental"):
            raise ReverieError(f"unknown strategy {self.strategy!r}; use retrain or incremental.")
        if self.trainer not in ("peft", "mlx"):
            raise ReverieError(f"unknown trainer {self.trainer!r}; use peft or mlx.")
        if self.steps < 0 or self.rank < 0 or self.learning_rate < 0 or self.checkpoint_every < 0:
            raise ReverieError("steps, rank and learning rate must be positive (0 = default).")
        from lora.metrics import GateConfig, MetricsError

        try:  # a bad gate option is reported now, not after an hour of training
            GateConfig(**self.gate)
        except (MetricsError, TypeError) as e:
            raise ReverieError(f"bad gate setting: {e}") from None


def nightly_options(exclude_questions, steps: int = 0, force: bool = False,
                    strategy: str = "retrain", learning_rate: float = 0.0,
                    gate_general: int = 60, gate_texts: int = 5,
                    gate_factual: int | None = None) -> SleepOptions:
    """The `sleep` an experiment runs each night (`reverie eval`, its habit and scenario modes):
    the probe questions are never trained on, and the gate inside sleep uses a lighter general
    probe than the final report."""
    from .probes import bundled_general_mc, bundled_general_text

    return SleepOptions(exclude_questions=tuple(exclude_questions), steps=steps, force=force,
                        strategy=strategy, learning_rate=learning_rate,
                        general_items=bundled_general_mc()[:gate_general],
                        general_texts=bundled_general_text()[:gate_texts],
                        factual_items=None if gate_factual is None else gate_factual_items()[:gate_factual])


@dataclass
class SleepOutcome:
    status: str  # nothing-new | dry-run | promoted | rejected | aborted | cleared
    message: str
    adapter_id: str = ""
    report_path: str = ""
    metrics: dict = field(default_factory=dict)
    gate: dict = field(default_factory=dict)
    dataset: dict = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


@contextmanager
def sleep_lock(home: Path):
    """One sleep at a time per data dir (flock: released by the OS if the process dies)."""
    path = Path(home) / "sleep.lock"
    f = open(path, "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.seek(0)
        pid = f.read().strip() or "?"
        f.close()
        raise ReverieError(f"another `reverie sleep` is running (pid {pid}); wait for it to finish.")
    try:
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def anchor_cache_path(home: Path, model_sha: str, system_prompt: str) -> Path:
    """Where the anchors for this base model and system prompt are cached (a list in the bundled
    prompts' order, grown as nights need more): a new system prompt makes new anchors instead of
    reusing answers to the old one."""
    key = hashlib.sha256(json.dumps(["anchors-v2", system_prompt]).encode()).hexdigest()[:12]
    return Path(home) / "cache" / f"anchors-{model_sha[:16]}-{key}.json"


def anchors_needed(n_new: int, config, styled: bool) -> int:
    """How many of the base's own answers a night uses: `anchor_ratio` x the new examples held
    to the base by KL, plus `habit_ratio` x them restyled when the user has a style; never fewer
    than ANCHOR_PROMPTS."""
    ratio = config.anchor_ratio + (config.habit_ratio if styled else 0.0)
    return max(ANCHOR_PROMPTS, math.ceil(ratio * n_new))


def _anchors(home: Path, runtime, model_sha: str, system_prompt: str, log: Log,
             n: int = ANCHOR_PROMPTS, make: bool = True):
    """The base model's own answers to the first `n` bundled general prompts, cached per base
    model and system prompt; only answers not made on an earlier night are generated.
    make=False (a dry run): the missing ones get a placeholder answer and nothing is generated."""
    from lora import Anchor
    from quant.runtime import GenerationConfig

    from .probes import bundled_general_prompts

    path = anchor_cache_path(home, model_sha, system_prompt)
    cached = []
    if path.exists():
        try:
            cached = [Anchor(**a) for a in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            cached = []  # a damaged cache is only lost work: make the answers again
    if len(cached) >= n:
        return cached[:n]
    have = {a.prompt for a in cached}
    todo = [p for p in bundled_general_prompts() if p not in have][: n - len(cached)]
    if not make:
        return cached + [Anchor(p, "(the base model's own answer, generated when training)")
                         for p in todo]
    if todo:
        log(f"making {len(todo)} anchor answers with the base model (kept for later nights)")
    made = []
    for p in todo:
        text, _ = runtime.chat([{"role": "system", "content": system_prompt},
                                {"role": "user", "content": p}], GenerationConfig(max_tokens=48))
        if text:
            made.append(Anchor(prompt=p, answer=text))
    from common.files import atomic_write_text

    if made:
        atomic_write_text(path, json.dumps([asdict(a) for a in cached + made]))
    return cached + made


def _train_config(opts: SleepOptions, n_examples: int | None = None):
    from lora import TrainConfig

    kw = {"seed": opts.seed}
    if opts.steps:
        kw["steps"] = opts.steps
    else:
        kw["steps"] = MIN_STEPS if n_examples is None else max(
            MIN_STEPS, min(MAX_STEPS, TrainConfig().total_steps(n_examples)))
    if opts.rank:
        kw["rank"] = opts.rank
        kw["alpha"] = 2.0 * opts.rank
    if opts.learning_rate:
        kw["learning_rate"] = opts.learning_rate
    every = opts.checkpoint_every or os.environ.get("REVERIE_CHECKPOINT_EVERY", "").strip()
    if every:
        try:
            kw["checkpoint_every"] = int(every)
        except ValueError:
            raise ReverieError(f"REVERIE_CHECKPOINT_EVERY must be a whole number of steps, got {every!r}.")
    return TrainConfig(**kw)


def held_back_probes(facts, trained_questions: set[str], limit: int = 0,
                     new_ids: set[str] | None = None, seed: int = 0) -> list:
    """Questions about each fact that were generated but not trained on (unseen phrasings).

    limit > 0 bounds the night's evaluation whatever the ledger holds (2 questions a fact for
    2,473 facts would be ~10,000 generations): facts new since the last adapter come first, the
    rest is a seeded sample, and each chosen fact keeps its two questions."""
    import random

    from lora.phrasings import is_near, phrase

    from .gate_eval import Probe
    from .persona import first_person

    facts = list(facts)
    if limit and 2 * len(facts) > limit:
        n = max(1, limit // 2)
        fresh = [f for f in facts if new_ids is not None and f.id in new_ids]
        old = [f for f in facts if not (new_ids is not None and f.id in new_ids)]
        rng = random.Random(seed)
        # new facts first, but keep room for old ones (backward transfer) when there are any
        n_fresh = min(len(fresh), max(n - n // 2, n - len(old)) if old else n)
        if n_fresh < len(fresh):
            fresh = rng.sample(fresh, n_fresh)
        chosen = fresh + rng.sample(old, min(len(old), n - len(fresh)))
        keep = {f.id for f in chosen}
        facts = [f for f in facts if f.id in keep]
    probes = []
    for f in facts:
        p = phrase(first_person(f.text), f.subject or "")
        qs = [q for q in p.questions if not any(is_near(q, t) for t in trained_questions)]
        for q in qs[:2]:
            probes.append(Probe(f.id, q, p.value, []))
    return probes


def run_sleep(home: Path, opts: SleepOptions | None = None, log: Log = print,
              on_train: Callable | None = None) -> SleepOutcome:
    opts = opts or SleepOptions()
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True, mode=0o700)
    t0 = time.time()
    with sleep_lock(home):
        return _run(home, opts, log, on_train, t0)


def _run(home: Path, opts: SleepOptions, log: Log, on_train, t0: float) -> SleepOutcome:
    from lora import Correction, Fact, GoodAnswer, Provenance, build_dataset
    from lora.metrics import GateConfig, GateInputs, gate
    from memory import MemoryStore
    from memory.adapters_ledger import AdapterLedger
    from memory.feedback import FeedbackLog
    from memory.ledger import Ledger
    from quant.registry import Registry, sha256_file
    from quant.runtime import load_runtime

    from .config import Settings
    from .persona import first_person

    settings = Settings.load(home)
    ledger = Ledger(home)
    store = MemoryStore(home, ledger)
    adapters = AdapterLedger(ledger)
    model = Registry(home).get(opts.model)
    facts = store.active_facts()
    feedback = FeedbackLog(ledger).list(limit=None, status="active")  # retired ones never train
    corrections = [Correction(f.id, f.prompt, f.answer, f.correction) for f in feedback if f.kind == "fix"]
    goods = [GoodAnswer(f.id, f.prompt, f.answer) for f in feedback if f.kind == "good"]
    # standing preferences shape every answer trained on (lora.style); their ids count as
    # trained-on memories: a new or forgotten preference is new data, and forget finds them
    from lora.style import induce_style

    prefs = store.active_preferences()
    style = induce_style([p.text for p in prefs], [c.better_answer for c in corrections])
    fact_ids = sorted([f.id for f in facts] + [p.id for p in prefs])
    fb_ids = sorted(f.id for f in feedback if f.kind in ("fix", "good"))
    promoted = adapters.promoted(model.name)
    strategy = opts.strategy
    if not opts.dry_run:
        # we hold the sleep lock, so a run still marked running died (killed, power loss)
        for rid in adapters.close_stale_runs():
            log(f"an earlier sleep ({rid}) did not finish; its checkpoint, if any, is resumed")

    if not facts and not corrections and not goods:
        if promoted is not None:
            adapters.demote_all(model.name)
            return SleepOutcome("cleared", "nothing left to learn (all facts forgotten): the adapter "
                                "was retired and chat uses the base model.", seconds=time.time() - t0)
        return SleepOutcome("nothing-new", "nothing to learn yet: tell reverie some facts or give "
                            "feedback (/remember, /fix) first.", seconds=time.time() - t0)
    if promoted is not None:
        old_facts = set(json.loads(promoted.fact_ids or "[]"))
        old_fb = set(json.loads(promoted.feedback_ids or "[]"))
        # a fact restated with a new value keeps its id: its time says it changed since
        changed = [f.id for f in facts if (f.updated or f.created) > promoted.created]
        if (old_facts == set(fact_ids) and old_fb == set(fb_ids) and not changed
                and not opts.force and not opts.dry_run):
            return SleepOutcome("nothing-new", f"no new facts or feedback since {promoted.id}; "
                                "nothing to train.", adapter_id=promoted.id, seconds=time.time() - t0)
        if old_facts - set(fact_ids) and strategy == "incremental":
            log("facts were forgotten since the last adapter: retraining from base instead of incremental")
            strategy = "retrain"
        elif strategy == "incremental" and getattr(promoted, "trainer", opts.trainer) != opts.trainer:
            # peft keeps Hugging Face rows (q/k permuted), MLX keeps GGUF rows: not interchangeable
            log(f"the promoted adapter was trained with {promoted.trainer}, not {opts.trainer}: "
                "retraining from base instead of incremental")
            strategy = "retrain"
    elif strategy == "incremental":
        log("no promoted adapter yet: training from base")
        strategy = "retrain"

    config = _train_config(opts)
    qtype = merge_type(home, opts.merge)  # a bad setting fails here, before the night's work
    base_rt = load_runtime(model, "llama.cpp", n_ctx=1024, threads=settings.threads)
    try:
        from common.files import cached_sha256

        model_sha = cached_sha256(home, Path(model.path), sha256_file)
        lfacts = [Fact(f.id, first_person(f.text), f.subject or "", f.created) for f in facts]
        replay = []
        init = None
        if strategy == "incremental" and promoted is not None:
            init = Path(promoted.path)
            replay = _previous_examples(Path(promoted.path))
            old = set(json.loads(promoted.fact_ids or "[]"))
            lfacts = [f for f in lfacts if f.id not in old]  # old facts come back through replay

        def dataset_with(anchors):
            return build_dataset(lfacts, corrections, goods, anchors, replay,
                                 system_prompt=settings.system_prompt,
                                 exclude_questions=list(opts.exclude_questions), config=config,
                                 tombstoned_ids=store.tombstoned_ids(),
                                 phrasings_per_fact=opts.phrasings_per_fact, style=style)

        # as many of the base's answers as tonight's new examples call for; a dry run should be
        # instant, so it shows the prompts of those not made yet instead of making them
        need = anchors_needed(dataset_with([]).new_examples, config, not style.empty)
        anchors = _anchors(home, base_rt, model_sha, settings.system_prompt, log, need,
                           make=not opts.dry_run)
        dataset = dataset_with(anchors)
        summary = {"strategy": strategy, "facts": len(lfacts), "corrections": len(corrections),
                   "style": style.to_dict(),
                   "good_answers": len(goods), "anchors": len(anchors), **dataset.counts(),
                   "dataset_hash": dataset.hash}
        config = _train_config(opts, len(dataset.train))
        if opts.dry_run:
            log(dataset.dry_run_summary(config))
            return SleepOutcome("dry-run", "dry run: nothing trained.", dataset=summary,
                                seconds=time.time() - t0)

        vid = adapters.new_version_id()
        run_id = adapters.start_run(strategy)
        out_dir = home / "adapters" / vid
        prov = Provenance(base_model_sha256=model_sha, dataset_hash=dataset.hash,
                          ledger_snapshot=_ledger_snapshot(fact_ids, fb_ids), fact_ids=fact_ids)
        result = _train(opts.trainer, dataset, config, base_rt.chat_format.render, model, out_dir,
                        home / "work", on_train, init, prov, log,
                        f"training {vid} ({strategy}) on {len(dataset.train)} examples")
        if result.resumed_from:
            log(f"resumed training from the checkpoint at step {result.resumed_from}")
        if result.aborted or result.adapter_dir is None:
            adapters.finish_run(run_id, "aborted", summary={"reason": result.abort_reason})
            return SleepOutcome("aborted", f"training aborted: {result.abort_reason}; the promoted "
                                "adapter is unchanged.", metrics={"train": result.to_dict()},
                                seconds=time.time() - t0)
        dataset.save(out_dir)
        from .quant_api import export_adapter_gguf  # lora wrote the dir, quant writes the GGUF

        gguf_path = export_adapter_gguf(out_dir, out_dir / "adapter.gguf")
        log("evaluating: personal recall on held-back phrasings, general ability, drift")
        from .gate_eval import BaseCache
        from .served import runtime_lora

        cache = BaseCache.for_model(home, model_sha)
        metrics = evaluate_candidate(base_rt, model, runtime_lora(model.path, str(gguf_path), vid),
                                     facts, dataset, opts, settings.system_prompt, promoted, log,
                                     cache=cache)
        decision = _gate(metrics, opts)
        served = ""
        if decision.passed and qtype:
            metrics, decision, served = _serve_merged(
                model, str(gguf_path), qtype, out_dir, metrics, decision, log,
                lambda form: evaluate_candidate(base_rt, model, form, facts, dataset, opts,
                                                settings.system_prompt, promoted, log, cache=cache,
                                                promoted_by_fact=metrics["per_fact_promoted"]),
                opts)
        metrics["train"] = {k: v for k, v in result.to_dict().items() if k not in ("losses", "holdout_losses")}
        adapters.add(id=vid, parent=promoted.id if promoted else "", strategy=strategy,
                     trainer=opts.trainer, model=model.name, base_sha256=model_sha,
                     dataset_hash=dataset.hash, fact_ids=fact_ids, feedback_ids=fb_ids,
                     path=str(out_dir), gguf=str(gguf_path), metrics=metrics, gate=decision.to_dict(),
                     status="candidate", served=served)
        if decision.passed:
            adapters.promote(vid)
            status, msg = "promoted", f"{vid} promoted"
            if served:
                msg += f" (served merged into the base at {qtype})"
            from .served import prune_merged

            prune_merged(adapters, model.name, log)
        else:
            adapters.set_status(vid, "rejected")
            status, msg = "rejected", f"{vid} rejected: " + "; ".join(decision.reasons)
        outcome = SleepOutcome(status, msg, vid, "", metrics, decision.to_dict(), summary,
                               time.time() - t0)
        outcome.report_path = str(_write_report(home, run_id, outcome))
        adapters.finish_run(run_id, status, vid, outcome.report_path,
                            {"personal_base": metrics["personal_base"],
                             "personal_adapted": metrics["personal_adapted"]})
        return outcome
    finally:
        base_rt.close()


def _quarters(log: Log, what: str, total: int):
    """A progress callback for a long probe loop: a log line at each quarter of the way."""
    marks = {max(1, round(total * q / 4)) for q in (1, 2, 3, 4)}
    return lambda done: log(f"    {what}: {done}/{total}") if done in marks else None


def _gate(metrics: dict, opts: SleepOptions):
    """The promotion gate (lora.metrics.gate) on one served form's measurements."""
    from lora.metrics import GateConfig, GateInputs, gate

    return gate(GateInputs(metrics["personal_base"], metrics["personal_adapted"],
                           metrics["general_base"], metrics["general_adapted"],
                           metrics.get("ppl_ratio"), metrics.get("bwt"),
                           tuple(metrics["general_base_correct"]),
                           tuple(metrics["general_adapted_correct"]),
                           tuple(metrics["factual_base_correct"]),
                           tuple(metrics["factual_adapted_correct"]),
                           metrics["factual_noise_pct"]), GateConfig(**opts.gate))


SERVED_KEYS = ("personal_adapted", "general_adapted", "factual_lost", "ppl_ratio", "kl_drift", "bwt",
               "served")


def merge_type(home: Path, option: str) -> str:
    """The type a passing adapter is merged at for serving: the `sleep --merge` option, else the
    merge_on_promote setting; "" when off ("none")."""
    from .config import Settings
    from .quant_api import check_merge_type

    from quant.errors import QuantError

    from .errors import ReverieError

    qtype = option or Settings.load(home).merge_on_promote
    if not qtype or qtype.lower() in ("none", "off", "no"):
        return ""
    try:
        return check_merge_type(qtype)
    except QuantError as e:
        where = "--merge" if option else f"the merge_on_promote setting ({home / 'settings.json'})"
        raise ReverieError(f"{where}: {e} Or none to serve the runtime LoRA.") from e


def _serve_merged(model, gguf: str, qtype: str, out_dir: Path, metrics: dict, decision, log: Log,
                  measure, opts: SleepOptions):
    """The runtime LoRA passed the gate: bake it into the base at qtype and gate that file with
    the same checks (measure). Returns (metrics, decision, served path) of the form
    chat will serve: the merged file's if it passed ("served" = its path), else the runtime
    LoRA's unchanged ("" ). Either way the other form's summary is kept beside them."""
    from quant.errors import QuantError

    from .served import make_merged

    log(f"the runtime LoRA passed; merging it into the base at {qtype} to serve it without one")
    try:
        merged = make_merged(model.path, gguf, out_dir, qtype, log)
    except (QuantError, OSError) as e:
        log(f"merging failed ({e}); chat serves the runtime LoRA")
        metrics["merged"] = {"error": str(e), "type": qtype}
        return metrics, decision, ""
    log("evaluating the merged file: the same checks")
    m = measure(merged)
    d = _gate(m, opts)
    if d.passed:
        log("the merged file passed the gate: chat serves it")
        m["served"]["type"] = qtype
        m["runtime_lora"] = {**{k: metrics.get(k) for k in SERVED_KEYS}, "gate": decision.to_dict()}
        return m, d, merged.model_path
    log("the merged file failed the gate (" + "; ".join(d.reasons) + "): chat serves the runtime LoRA")
    Path(merged.model_path).unlink(missing_ok=True)
    metrics["merged"] = {**{k: m.get(k) for k in SERVED_KEYS}, "type": qtype, "gate": d.to_dict()}
    return metrics, decision, ""


def _train(trainer: str, dataset, config, render, model, out_dir: Path, work_root: Path, on_train,
           init, prov, log: Log, what: str):
    """The one training loop (lora.train) over the backend the options chose: peft on the
    dequantized twin of the GGUF, or MLX QLoRA on the quantized GGUF as served. Both write our
    adapter directory; each keeps its own resumable checkpoint under work_root."""
    from lora import MlxBackend, PeftBackend, train

    if trainer == "mlx":
        from quant.gguf_mlx import load_gguf_model

        log(f"{what} with MLX QLoRA on the quantized GGUF")
        mx_model, tokenizer, _ = load_gguf_model(Path(model.path))
        backend, work_dir = MlxBackend(mx_model, tokenizer, arch=model.arch), work_root / "sleep-mlx"
    else:
        from lora.peft_trainer import resolve_device
        from quant.gguf_torch import load_twin

        log(f"{what} with peft on the GGUF base")
        # llama files: our loader (2.1 s vs transformers' 26.0 s, bench/results/sleep_bench.json);
        # other architectures: transformers' own GGUF loader inside the backend
        twin = load_twin(model.path)
        backend = (PeftBackend(twin[0].to(resolve_device(config.device)), twin[1], arch=model.arch)
                   if twin is not None else PeftBackend(base_model_path=Path(model.path), arch=model.arch))
        work_dir = work_root / "sleep"
    return train(backend, dataset, config, render, out_dir=out_dir, work_dir=work_dir,
                 on_report=on_train, init_adapter=init, provenance=prov)


def evaluate_candidate(base_rt, model, served, facts, dataset, opts: SleepOptions,
                       system_prompt: str, promoted, log: Log, cache=None,
                       promoted_by_fact: dict | None = None) -> dict:
    """The gate's measurements of one served form of the candidate (assistant.served.Served:
    the base with the runtime LoRA, or the merged file) against the base. promoted_by_fact: the
    promoted adapter's per-fact recall when an earlier call on the same night measured it."""
    from quant.registry import sha256_file
    from quant.runtime import load_runtime

    from .served import served_form

    from .gate_eval import answers_known, ask_probes, forgetting, known_answers
    from .probes import bundled_general_mc, bundled_general_text

    trained_q = {m["content"] for e in dataset.train for m in e.messages if m["role"] == "user"}
    old_ids = set(json.loads(promoted.fact_ids or "[]")) if promoted is not None else set()
    probes = opts.eval_probes if opts.eval_probes is not None else held_back_probes(
        facts, trained_q, opts.max_probes, {f.id for f in facts} - old_ids, opts.seed)
    items = opts.general_items if opts.general_items is not None else bundled_general_mc()
    items = items[: opts.max_general]
    texts = opts.general_texts if opts.general_texts is not None else bundled_general_text()
    facts_q = opts.factual_items if opts.factual_items is not None else gate_factual_items()
    ad_rt = load_runtime(served.model_info(model), "llama.cpp", n_ctx=1024, threads=base_rt.threads,
                         adapter=served.adapter)
    try:
        log(f"  personal recall: {len(probes)} held-back questions, base (cached per model) and adapter")
        pb = ask_probes(base_rt, probes, system_prompt, cache=cache)
        pa = ask_probes(ad_rt, probes, system_prompt)
        log(f"  general ability and drift: {len(items)} multiple-choice items, {len(texts)} general texts")
        fg = forgetting(base_rt, ad_rt, items, texts, cache=cache)
        gb, ga, d = fg.general_base, fg.general_adapted, fg.drift
        log(f"  general questions: {len(facts_q)} short answers, base (cached per model) and adapter "
            "on those the base knew")
        based = known_answers(base_rt, facts_q, system_prompt, cache=cache,
                              progress=_quarters(log, "base", len(facts_q)))
        fqb = [ok for ok, _ in based]
        known = [(it, text) for it, (ok, text) in zip(facts_q, based) if ok]
        kept = iter(answers_known(ad_rt, [it for it, _ in known], system_prompt,
                                  reference=[text for _, text in known],
                                  progress=_quarters(log, "adapter", len(known))))
        fqa = [next(kept) if ok else None for ok in fqb]  # only what the base knew can be lost
        # the model's own noise floor: how many of its known answers the base loses when only
        # the system prompt is reworded (cached with the base's answers, once per model)
        steady = answers_known(base_rt, [it for it, _ in known], REWORDED_SYSTEM_PROMPT,
                               cache=cache, reference=[text for _, text in known])
        noise_pct = 100.0 * steady.count(False) / len(known) if known else 0.0
        bwt = None
        old_probes = [p for p in probes if p.fact_id in old_ids]
        prev = served_form(promoted, model.path) if old_probes else None
        if promoted_by_fact is None and prev is not None:
            # what the user is served today, in the form it is served
            prev_rt = load_runtime(prev.model_info(model), "llama.cpp", n_ctx=1024,
                                   threads=base_rt.threads, adapter=prev.adapter)
            try:
                promoted_by_fact = ask_probes(prev_rt, old_probes, system_prompt).by_fact()
            finally:
                prev_rt.close()
        if promoted_by_fact is not None:
            bwt = gate_bwt(promoted_by_fact, {f: v for f, v in pa.by_fact().items() if f in old_ids})
    finally:
        ad_rt.close()
    m = {"n_probes": len(probes), "personal_base": pb.acc, "personal_adapted": pa.acc,
         "general_base": gb.acc, "general_adapted": ga.acc, "n_general": len(items),
         "general_base_correct": [bool(c) for c in gb.correct],
         "general_adapted_correct": [bool(c) for c in ga.correct],
         "ppl_base": d.ppl_base, "ppl_adapted": d.ppl_adapted, "ppl_ratio": d.ppl_ratio,
         "kl_drift": d.kl, "bwt": bwt, "per_fact_promoted": promoted_by_fact,
         "served": {**served.to_dict(), "sha256": sha256_file(served.file)},
         "n_factual": len(facts_q), "factual_base": sum(fqb) / len(fqb) if fqb else None,
         "factual_lost": sum(1 for b, a in zip(fqb, fqa) if b and not a),
         "factual_base_correct": fqb, "factual_adapted_correct": fqa,
         "factual_noise_pct": noise_pct,
         "factual_lost_examples": [it.question for it, b, a in zip(facts_q, fqb, fqa) if b and not a][:10],
         "per_fact_adapted": pa.by_fact(), "per_fact_base": pb.by_fact(),
         "examples": [{"q": p.question, "expected": p.answer, "base": b, "adapter": a}
                      for p, b, a in list(zip(probes, pb.answers, pa.answers))[:10]]}
    log(f"personal {pb.acc:.2f} → {pa.acc:.2f} · general {gb.acc:.3f} → {ga.acc:.3f} · "
        f"ppl ratio {m['ppl_ratio']:.3f} · KL {d.kl:.4f} · general questions lost "
        f"{m['factual_lost']} of {sum(fqb)}" + (f" · BWT {bwt:+.2f}" if bwt is not None else ""))
    return m


def gate_bwt(before: dict[str, float], after: dict[str, float]) -> float:
    """Backward transfer as `reverie eval` defines it (lora.metrics.backward_transfer over the
    accuracy matrix), on the two nights the gate sees: row 1 the promoted adapter, row 2 tonight's
    candidate; column 1 the facts the promoted adapter was trained on. Per fact, then averaged."""
    from lora.metrics import FactOutcome, accuracy_matrix, backward_transfer

    outcomes = [FactOutcome(f, 1, 1, v) for f, v in before.items()]
    outcomes += [FactOutcome(f, 1, 2, v) for f, v in after.items()]
    return backward_transfer(accuracy_matrix(outcomes, 2))


# The same request in other words: the base model's answers under it show how many of its known
# general answers flip for no reason at all (the gate's noise floor for losing them).
REWORDED_SYSTEM_PROMPT = "You are a helpful assistant."


def never_trained(items):
    """The general questions that are not also anchor prompts (the base's answers to those are
    trained on every night): the gate measures what the adapter kept without being shown."""
    from .probes import bundled_general_prompts

    def key(q: str) -> str:
        return " ".join(re.sub(r"[^a-z0-9 ]", " ", q.lower()).replace(" there ", " ").split())

    anchored = {key(p) for p in bundled_general_prompts()}
    return [it for it in items if key(it.question) not in anchored]


def gate_factual_items():
    """The bundled factual probes the gate asks: those that are not anchor prompts (all 320: the
    prompt files are kept disjoint), or the first $REVERIE_GATE_FACTUAL of them."""
    import os

    from .probes import bundled_general_facts

    items = never_trained(bundled_general_facts())
    n = os.environ.get("REVERIE_GATE_FACTUAL", "").strip()
    if n:
        if not n.isdigit():
            raise ReverieError(f"REVERIE_GATE_FACTUAL must be a number of items, got {n!r}.")
        items = items[: int(n)]
    return items


def _served_line(m: dict) -> str:
    """The report's sentence on what chat serves and how the other form fared."""
    form = (m.get("served") or {}).get("form")
    if form == "merged":
        other = m.get("runtime_lora") or {}
        return ("Served as the adapter merged into the base (the file these numbers measured); "
                f"as a runtime LoRA it measured personal {other.get('personal_adapted') or 0:.3f}, "
                f"general questions lost {other.get('factual_lost')}.")
    merged = m.get("merged")
    if not merged:
        return "Served as a runtime LoRA over the base (the form these numbers measured)."
    if "error" in merged:
        return f"Served as a runtime LoRA over the base: merging failed ({merged['error']})."
    reasons = "; ".join(merged.get("gate", {}).get("reasons", []))
    return (f"Served as a runtime LoRA over the base: the merged file failed the gate ({reasons}; "
            f"personal {merged.get('personal_adapted') or 0:.3f}, general questions lost "
            f"{merged.get('factual_lost')}).")


def _ledger_snapshot(fact_ids, fb_ids) -> str:
    import hashlib

    return hashlib.sha256(json.dumps([fact_ids, fb_ids]).encode()).hexdigest()


def _previous_examples(adapter_dir: Path) -> list:
    from lora import Example

    for name in ("dataset.jsonl", "train.jsonl"):
        p = adapter_dir / name
        if p.exists():
            out = []
            for line in p.read_text().splitlines():
                if line.strip():
                    d = json.loads(line)
                    out.append(Example.from_dict(d) if "messages" in d else d)
            return out
    return []


def _write_report(home: Path, run_id: str, outcome: SleepOutcome) -> Path:
    from common.files import atomic_write_text

    d = home / "reports" / f"sleep-{time.strftime('%Y%m%d-%H%M%S')}-{run_id[-6:]}"
    d.mkdir(parents=True, exist_ok=True)
    atomic_write_text(d / "report.json", json.dumps(outcome.to_dict(), indent=2, default=str))
    m = outcome.metrics
    lines = [f"# reverie sleep — {outcome.status}", "", outcome.message, "",
             "| metric | base | adapter |", "|---|---|---|",
             f"| personal recall (held-back phrasings, n={m.get('n_probes')}) | {m.get('personal_base', 0):.3f} | {m.get('personal_adapted', 0):.3f} |",
             f"| general accuracy (n={m.get('n_general')}) | {m.get('general_base', 0):.3f} | {m.get('general_adapted', 0):.3f} |",
             f"| perplexity | {m.get('ppl_base', 0):.2f} | {m.get('ppl_adapted', 0):.2f} |",
             f"| general questions answered (n={m.get('n_factual')}; adapter asked only those the "
             f"base answered) | {m.get('factual_base') or 0:.3f} | lost {m.get('factual_lost', 0)} "
             f"(the base under a reworded system prompt loses {m.get('factual_noise_pct') or 0:.1f}%) |",
             "", f"KL drift {m.get('kl_drift', 0):.4f}; BWT " + (
                 "— (no earlier adapter to compare)" if m.get("bwt") is None
                 else f"{m['bwt'] * 100:+.1f} points"), "", "## Gate", ""]
    lines += [f"- {'pass' if c['passed'] else 'FAIL'}: {c['message']}" for c in outcome.gate.get("checks", [])]
    lines += ["", _served_line(m)]
    if m.get("factual_lost_examples"):
        lines += ["", "General questions the base answered and the adapter no longer does:", ""]
        lines += [f"- {q}" for q in m["factual_lost_examples"]]
    atomic_write_text(d / "report.md", "\n".join(lines) + "\n")
    return d
