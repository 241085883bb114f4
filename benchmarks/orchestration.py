"""Request throughput of distillery's orchestration against one local load-test endpoint, beside
raw ``openai.AsyncOpenAI``, Bespoke Curator 0.1.31 and distilabel 1.5.3 (issue 11).

The endpoint (``benchmarks/loadtest_server.py``, a separate process on 127.0.0.1) holds each
request ``latency`` seconds in one of ``slots`` slots, so the most any client can get is
``min(slots, C) / latency`` requests/s ("ideal"); what a client gets below that is its own
overhead: CPU per request, pauses between batches, a concurrency it does not reach. Two
settings:

- ``latency-bound``: 0.2 s, 64 slots, client concurrency C = 64 (ideal 320 requests/s);
- ``cpu-bound``: 0.05 s, 1024 slots, C = 512 (ideal 10240 requests/s: the client's CPU is the
  limit, so this compares the clients' CPU per request).

Every leg sends the same N distinct prompts (one user message each, ``max_tokens`` 16,
temperature 0), each leg in its own fresh subprocess, the legs interleaved (their order rotates
every round), ``--repeats`` rounds:

- ``distillery``: ``distillery run RECIPE -o DIR --no-progress`` on a recipe written to a fresh
  temporary folder (seeds JSONL of the prompts, ``teacher: {backend: openai, concurrency: C}``,
  the default generation (rejection sampling, 1 sample), no verifiers, filters, dedup or
  decontamination, the **default** ``output.batch_size`` unless ``--batch-size`` is given);
- ``raw``: plain ``openai.AsyncOpenAI()`` with default settings, ``asyncio.Semaphore(C)``,
  ``asyncio.gather`` over all prompts: the naive baseline;
- ``curator``, ``distilabel``: ``benchmarks/peers/*_run.py`` in the peer's virtualenv
  (``.bench-peers/<peer>``, built by ``make bench-peers``), when it exists.

What is measured, per leg:

- ``req/s``: N / the time the leg spends generating, as the leg measures it: for distillery from
  the moment its run directory is prepared (``run.json``'s mtime, written just before the
  executor starts) to its last batch's finish (the last marker's mtime in ``DIR/shards/``): all
  its batches, reading the seeds, building the prompts, the verdicts, writing the shards and any
  pause between batches included; imports, recipe checks, the reduce and the report not. For raw
  and the peers, N / the timed generation call (building every request included, imports and
  construction not). The ratios use it.
- ``endpoint req/s``: N / the span the *endpoint* saw, from the client's first connection (the
  moment the endpoint accepted it) to the last answer sent (``GET /stats`` after a
  ``POST /stats/reset``): the same instrument for every leg, but blind to CPU a client spends
  before its first connection, which can be most of a short leg at C = 512 (``--measure
  endpoint`` puts the ratios on it).
- ``wall s``: the leg's whole subprocess, start-up and (for distillery) the reduce and report
  included.
- ``peak``: the most requests the endpoint had in flight at once (does the client reach C?).

``--json`` also keeps distillery's ``report.json`` ``throughput.requests_per_s`` (backend calls /
the batches' summed time waiting for the backend: not the run's rate when batches overlap) as
``report_requests_per_s``, and ``batch_span_s``, the span by the markers' own ``seconds``.
Under each table a line gives where distillery's time beyond the endpoint's span goes: how long
after its run started its first connection came, and how long after the endpoint's last answer
its last marker was written.

Each leg must grow the endpoint's request count by exactly N (a leg served from a cache, or
one that retried, is an error and its figures are left out). Medians over rounds are printed,
with the ratio to ideal, distillery / raw and distillery / each peer.

Run it with the project's interpreter (``distillery`` is found beside it):

    .venv/bin/python benchmarks/orchestration.py          # N = 4000, 2 rounds, both settings
    .venv/bin/python benchmarks/orchestration.py --quick  # N = 500, 1 round (development)
    .venv/bin/python benchmarks/orchestration.py --setting latency-bound --legs distillery,raw --n 2000
    .venv/bin/python benchmarks/orchestration.py --batch-size 4000   # distillery in one big batch
    .venv/bin/python benchmarks/orchestration.py --distilabel-replicas 2 --json results.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import loadtest_server  # noqa: E402

PEERS_DIR = Path(os.environ.get("BENCH_PEERS_DIR") or REPO / ".bench-peers")  # as benchmarks/peers/setup.sh
LEGS = ("distillery", "raw", "curator", "distilabel")
PEER_SCRIPTS = {"curator": REPO / "benchmarks/peers/curator_run.py",
                "distilabel": REPO / "benchmarks/peers/distilabel_run.py"}


@dataclass(frozen=True)
class Setting:
    """One endpoint configuration and the client concurrency used against it."""

    name: str
    latency: float  # seconds per request
    slots: int  # requests the endpoint serves at once
    concurrency: int  # C, every client's limit on requests in flight

    @property
    def ideal(self) -> float:
        """requests/s: ``min(slots, C) / latency``."""
        return min(self.slots, self.concurrency) / self.latency


SETTINGS = {
    "latency-bound": Setting("latency-bound", 0.2, 64, 64),
    "cpu-bound": Setting("cpu-bound", 0.05, 1024, 512),
}


@dataclass
class LegResult:
    """One leg's run: figures in requests/s and seconds, or ``error``."""

    leg: str
    server_rps: float | None = None
    own_rps: float | None = None
    wall_s: float | None = None
    peak: int | None = None
    extra: dict = field(default_factory=dict)
    error: str | None = None


def prompts(n: int) -> list[dict]:
    """``n`` distinct short prompts ``{"id", "question"}``, the same for every leg and setting."""
    return [{"id": f"q{i:06d}", "question": f"Question {i}: what is {i} plus {(7 * i) % 13}? Answer briefly."}
            for i in range(n)]


# ---------------------------------------------------------------- legs


def _run(cmd: list[str], timeout: float, env: dict | None = None, cwd: Path | None = None) -> tuple[str, float]:
    """Run ``cmd``; return (stdout, wall seconds). Raises RuntimeError on failure."""
    started = time.perf_counter()
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"timed out after {timeout:.0f} s") from e
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"exit {done.returncode}:\n{(done.stderr or done.stdout)[-3000:]}")
    return done.stdout, wall


def _json_line(stdout: str) -> dict:
    """The last line of ``stdout`` that parses as a JSON object."""
    for line in reversed(stdout.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    raise RuntimeError(f"no JSON result line in the leg's output:\n{stdout[-2000:]}")


def _clean_env(tmp: Path) -> dict:
    """The environment of a leg: this one without virtualenv variables, caches in ``tmp``."""
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")}
    env.update(TMPDIR=str(tmp), HF_HOME=str(tmp / "hf"), HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1",
               TOKENIZERS_PARALLELISM="false", NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    return env


def leg_distillery(s: Setting, base_url: str, model: str, prompts_file: Path, n: int, tmp: Path,
                   batch_size: int | None, timeout: float) -> LegResult:
    """``distillery run`` on a fresh recipe and run directory; own figure from ``report.json``."""
    import yaml

    recipe = {
        "name": "orchestration-bench",
        "seeds": {"path": str(prompts_file), "id_field": "id"},
        "prompt": {"template": "{{ question }}"},
        "teacher": {"backend": "openai", "base_url": base_url, "model": model, "api_key_env": None,
                    "concurrency": s.concurrency,
                    "sampling": {"max_tokens": 16, "temperature": 0}},
        "report": {"embedding_model": None},
    }
    if batch_size is not None:
        recipe["output"] = {"batch_size": batch_size}
    path = tmp / "recipe.yaml"
    path.write_text(yaml.safe_dump(recipe, sort_keys=False))
    out = tmp / "run"
    exe = Path(sys.executable).parent / "distillery"
    cmd = [str(exe) if exe.exists() else sys.executable, *([] if exe.exists() else ["-m", "distillery"]),
           "run", str(path), "-o", str(out), "--no-progress"]
    _, wall = _run(cmd, timeout, env=_clean_env(tmp), cwd=tmp)
    report = json.loads((out / "report.json").read_text())
    calls = report.get("cache", {}).get("backend_calls")
    if calls is not None and calls != n:
        raise RuntimeError(f"distillery made {calls} backend calls, not {n}")
    # The generating span: from run.json's write (the run directory is prepared just before the
    # executor starts; mtimes have ns resolution) to the last batch marker's write (a batch is
    # done when its marker exists). It leaves out imports, recipe checks, the reduce and the report.
    ends = [(m.stat().st_mtime_ns / 1e9, json.loads(m.read_text()).get("seconds", 0.0))
            for m in (out / "shards").glob("batch-*.json")]
    if not ends:
        raise RuntimeError(f"distillery wrote no batch markers in {out / 'shards'}")
    last = max(end for end, _ in ends)
    run_start = (out / "run.json").stat().st_mtime_ns / 1e9
    span = last - run_start
    batch_span = last - min(end - secs for end, secs in ends)  # by the markers' own ``seconds``
    return LegResult("distillery", own_rps=n / span, wall_s=wall,
                     extra={"batches": len(ends), "span_s": round(span, 3), "run_start": run_start, "batch_span_s": round(batch_span, 3),
                            "report_requests_per_s": (report.get("throughput") or {}).get("requests_per_s"),
                            "generation_time_s": report.get("generation_time_s"),
                            "session_wall_s": report.get("session_wall_s")})


def leg_script(leg: str, python: str, script: list[str], s: Setting, base_url: str, model: str,
               prompts_file: Path, n: int, tmp: Path, timeout: float) -> LegResult:
    """A leg that is a script printing ``{"requests": n, "seconds": t}`` (raw and the peers)."""
    cmd = [python, *script, "--base-url", base_url, "--model", model, "--n", str(n),
           "--concurrency", str(s.concurrency), "--prompts", str(prompts_file), "--work-dir", str(tmp)]
    stdout, wall = _run(cmd, timeout, env=_clean_env(tmp), cwd=tmp)
    got = _json_line(stdout)
    if got.get("requests") != n:
        raise RuntimeError(f"{leg} says it made {got.get('requests')} requests, not {n}")
    extra = {k: v for k, v in got.items() if k not in ("requests", "seconds")}
    return LegResult(leg, own_rps=n / got["seconds"], wall_s=wall, extra=extra)


def run_leg(leg: str, s: Setting, server: loadtest_server.LoadtestServer, model: str, prompts_file: Path, n: int,
            batch_size: int | None, timeout: float, peer_args: dict[str, list[str]] | None = None) -> LegResult:
    """Run one leg in a fresh subprocess and temporary folder; check the endpoint saw exactly ``n``.

    ``peer_args``: extra command-line arguments of a peer's script, by leg."""
    before = server.stats()["requests"]
    server.reset()
    with tempfile.TemporaryDirectory(prefix=f"orch-{leg}-") as tmp:
        tmp = Path(tmp)
        try:
            if leg == "distillery":
                r = leg_distillery(s, server.base_url, model, prompts_file, n, tmp, batch_size, timeout)
            elif leg == "raw":
                r = leg_script(leg, sys.executable, [str(Path(__file__).resolve()), "--raw-leg"], s,
                               server.base_url, model, prompts_file, n, tmp, timeout)
            else:
                r = leg_script(leg, str(PEERS_DIR / leg / "bin/python"),
                               [str(PEER_SCRIPTS[leg]), *(peer_args or {}).get(leg, [])], s,
                               server.base_url, model, prompts_file, n, tmp, timeout)
        except RuntimeError as e:
            r = LegResult(leg, error=str(e))
    st = server.stats()
    served = st["requests"] - before
    if r.error is None and served != n:
        r.error = f"the endpoint served {served} requests, not {n} (a cache, retries or lost requests)"
    if r.error is None:
        r.server_rps = st["window_requests"] / (st["last_end"] - st["first_start"])
        r.peak = st["peak_in_flight"]
        r.extra["arrival_rps"] = round(st["window_requests"] / (st["last_end"] - st["first_arrival"]), 1)
        r.extra["endpoint_span_s"] = round(st["last_end"] - st["first_start"], 3)
        if "run_start" in r.extra:  # distillery: from its run directory's preparation to its first connection
            to_epoch = time.time() - time.monotonic()
            r.extra["first_connection_after_s"] = round(st["first_start"] + to_epoch - r.extra.pop("run_start"), 3)
            r.extra["tail_after_last_answer_s"] = round(
                r.extra["span_s"] - r.extra["first_connection_after_s"] - r.extra["endpoint_span_s"], 3)
    return r


def installed(leg: str) -> bool:
    """Whether a leg can run here (the peers need their virtualenvs)."""
    return leg in ("distillery", "raw") or (PEERS_DIR / leg / "bin/python").exists()


# ---------------------------------------------------------------- the raw baseline (run as a subprocess)


async def _raw(base_url: str, model: str, texts: list[str], concurrency: int) -> float:
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="loadtest")
    sem = asyncio.Semaphore(concurrency)

    async def one(text: str) -> str:
        async with sem:
            r = await client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": text}], max_tokens=16, temperature=0)
            return r.choices[0].message.content

    started = time.perf_counter()
    answers = await asyncio.gather(*(one(t) for t in texts))
    seconds = time.perf_counter() - started
    assert len(answers) == len(texts) and all(answers)
    await client.close()
    return seconds


def raw_leg_main(argv: list[str]) -> None:
    """The ``raw`` leg: plain AsyncOpenAI, default client settings, a semaphore of C."""
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--model", required=True)
    p.add_argument("--n", type=int, required=True)
    p.add_argument("--concurrency", type=int, required=True)
    p.add_argument("--prompts", required=True)
    p.add_argument("--work-dir")
    a = p.parse_args(argv)
    with open(a.prompts) as f:
        texts = [json.loads(line)["question"] for line in f][: a.n]
    seconds = asyncio.run(_raw(a.base_url, a.model, texts, a.concurrency))
    print(json.dumps({"requests": len(texts), "seconds": seconds}))


# ---------------------------------------------------------------- the table


def _median(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _fmt(x: float | None, spec: str) -> str:
    return "-" if x is None else format(x, spec)


def table(s: Setting, n: int, rounds: int, results: dict[str, list[LegResult]], measure: str,
          missing: list[str]) -> dict:
    """Print one setting's table; return its medians."""
    print(f"\n## {s.name}: latency {s.latency} s, {s.slots} slots, C = {s.concurrency}, N = {n}, "
          f"{rounds} round(s); ideal {s.ideal:.0f} requests/s")
    first, other = ("req/s", "endpoint req/s") if measure == "own" else ("endpoint req/s", "own req/s")
    print(f"| leg | {first} | x ideal | {other} | wall s | peak in flight | ok rounds |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    med: dict[str, dict] = {}
    for leg, rs in results.items():
        ok = [r for r in rs if r.error is None]
        m = {"server_rps": _median([r.server_rps for r in ok]), "own_rps": _median([r.own_rps for r in ok]),
             "wall_s": _median([r.wall_s for r in ok]), "peak": max((r.peak or 0 for r in ok), default=None),
             "ok": len(ok), "rounds": len(rs), "errors": [r.error for r in rs if r.error]}
        m["rps"] = m["server_rps"] if measure == "endpoint" else m["own_rps"]
        med[leg] = m
        print(f"| {leg} | {_fmt(m['rps'], '.1f')} | {_fmt(m['rps'] and m['rps'] / s.ideal, '.3f')} | "
              f"{_fmt(m['server_rps'] if measure == 'own' else m['own_rps'], '.1f')} | {_fmt(m['wall_s'], '.1f')} | {m['peak'] if ok else '-'} | "
              f"{len(ok)}/{len(rs)} |")
    for leg in missing:
        print(f"| {leg} | not installed (make bench-peers) | | | | | |")
    d = med.get("distillery", {}).get("rps")
    ratios = {}
    for peer in ("raw", "curator", "distilabel"):
        o = med.get(peer, {}).get("rps")
        if d and o:
            ratios[peer] = d / o
    if d:
        print(f"distillery / ideal {d / s.ideal:.3f}" + "".join(f" · distillery / {k} {v:.2f}" for k, v in ratios.items())
              + f"   (ratios from {'the endpoint' if measure == 'endpoint' else 'each leg'}'s requests/s, medians)")
    dx = [r.extra for r in results.get("distillery", []) if r.error is None and "tail_after_last_answer_s" in r.extra]
    if dx:
        print(f"distillery (medians): {_median([x['batches'] for x in dx]):.0f} batches; its first connection "
              f"{_median([x['first_connection_after_s'] for x in dx]):.3f} s after its run started, its last marker "
              f"{_median([x['tail_after_last_answer_s'] for x in dx]):.3f} s after the endpoint's last answer")
    for leg, m in med.items():
        for e in m["errors"]:
            print(f"  {leg} failed: {e.splitlines()[0] if e else e}")
            if len(e.splitlines()) > 1:
                print("    " + "\n    ".join(e.splitlines()[-15:]))
    extras = {leg: [r.extra for r in rs if r.extra] for leg, rs in results.items()}
    return {"setting": s.__dict__ | {"ideal": s.ideal}, "n": n, "medians": med, "ratios": ratios, "extra": extras}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-leg":
        raw_leg_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=None, help="requests per leg (default 4000; 500 with --quick)")
    parser.add_argument("--repeats", type=int, default=None, help="rounds (default 2; 1 with --quick)")
    parser.add_argument("--quick", action="store_true", help="N = 500, 1 round (development)")
    parser.add_argument("--setting", action="append", choices=sorted(SETTINGS), help="default: both")
    parser.add_argument("--legs", default=",".join(LEGS), help=f"comma-separated, of {','.join(LEGS)}")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="distillery's output.batch_size (default: the shipped default)")
    parser.add_argument("--model", default="gpt-4o-mini",
                        help="model name sent (one litellm knows, for Curator; the endpoint answers any)")
    parser.add_argument("--measure", choices=("own", "endpoint"), default="own",
                        help="which requests/s the ratios use (see the module doc)")
    parser.add_argument("--distilabel-replicas", type=int, default=1,
                        help="processes of distilabel's generation step, C split among them")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per leg before it is an error")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    n = args.n or (500 if args.quick else 4000)
    rounds = args.repeats or (1 if args.quick else 2)
    legs = [x.strip() for x in args.legs.split(",") if x.strip()]
    if unknown := set(legs) - set(LEGS):
        parser.error(f"unknown legs: {sorted(unknown)}")
    missing = [leg for leg in legs if not installed(leg)]
    legs = [leg for leg in legs if leg not in missing]
    settings = [SETTINGS[k] for k in (args.setting or SETTINGS)]
    print(f"orchestration benchmark: N = {n}, {rounds} round(s), legs {', '.join(legs)}; "
          f"{os.cpu_count()} CPUs here; distillery output.batch_size "
          f"{args.batch_size if args.batch_size is not None else 'default'}", flush=True)
    out = []
    with tempfile.TemporaryDirectory(prefix="orch-") as tmp:
        prompts_file = Path(tmp) / "prompts.jsonl"
        prompts_file.write_text("".join(json.dumps(p) + "\n" for p in prompts(n)))
        for s in settings:
            results: dict[str, list[LegResult]] = {leg: [] for leg in legs}
            with loadtest_server.start(s.latency, s.slots, model=args.model) as server:
                for i in range(rounds):
                    order = legs[i % len(legs):] + legs[:i % len(legs)] if legs else []
                    for leg in order:
                        r = run_leg(leg, s, server, args.model, prompts_file, n, args.batch_size, args.timeout,
                                    {"distilabel": ["--replicas", str(args.distilabel_replicas)]})
                        results[leg].append(r)
                        status = (f"{_fmt(r.own_rps, '8.1f')} req/s, endpoint {r.server_rps:.1f}, "
                                  f"wall {r.wall_s:.1f} s, peak {r.peak}") if r.error is None else \
                            f"FAILED: {r.error.splitlines()[0]}"
                        print(f"{s.name} round {i} {leg:10s} {status}", flush=True)
            out.append(table(s, n, rounds, results, args.measure, missing))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2, default=str))


if __name__ == "__main__":
    main()
