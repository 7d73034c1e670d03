"""Answer checking: the final answer of a completion against a gold answer, with Math-Verify.

The final answer is the content of the last balanced `\\boxed{...}` (or a GSM8K-style `#### N`).
Model output is untrusted: it is never executed, and a final answer longer than `MAX_ANSWER_CHARS`
is unparseable (a wrong answer).

Hard time limit. Math-Verify's own timeouts use `signal.alarm`, which cannot interrupt a long
C-level operation (a huge integer power, say) and does not work outside the main thread. So
Math-Verify runs in one persistent worker process, started on first need: a fresh interpreter
(`sys.executable -c ...`) that imports only `lensrl.rollout.verify` (never the caller's main module, so a
script needs no `if __name__ == "__main__":` guard) and talks over a socket pair, not its stdout.
The worker interrupts itself with an alarm after `SOFT_TIMEOUT_FRACTION * timeout_s`, which covers
slow Python-level work without a restart; the parent waits at most `timeout_s` for the verdict,
and past that kills the worker (a new one starts on the next attempt). A timed-out attempt is
retried once (a correct answer can be slow to check on a loaded machine); if the retry times out
too, the verdict is False. The worker also bounds its address space (`MEMORY_LIMIT_BYTES` above
what it uses once Math-Verify is loaded), so a hostile answer gets a MemoryError instead of
exhausting the machine; any exception or crash in the worker is a False verdict, never an error
in the caller. A worker killed from outside is noticed and replaced, and the worker is killed at
interpreter exit. Where no worker can start, Math-Verify runs in-process with its own
signal-based timeouts (none outside the main thread), with one warning; a timeout it reports is
retried and counted as above.

Fast paths skip the worker: an answer equal to the gold string, and two plain numbers (`-12`,
`1,234`, `0.50`) that are equal, or distinct integers. Other definite verdicts are memoised on
(answer, gold), because sampled groups repeat answers a lot. A worker error or crash is memoised
as False (it comes from the answer, and re-running it would only cost a restart each time); a
timeout is never memoised, so a later call checks the pair again.

`stats()` gives cumulative counters: `calls`, `unparseable` (no final answer, or too long),
`timeouts` (every timed-out attempt), `retries` (attempts repeated after a timeout), `errors`
(worker exceptions, memory errors and crashes) and `worker_restarts`.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
import warnings
from collections import OrderedDict
from decimal import Decimal
from multiprocessing.connection import Connection

from math_verify import parse, verify
from math_verify.errors import TimeoutException

MAX_ANSWER_CHARS = 256  # a longer "final answer" is treated as unparseable
MAX_BOX_TRIES = 16  # unbalanced `\\boxed{` openings skipped before giving up
DEFAULT_TIMEOUT_S = 3.0
SOFT_TIMEOUT_FRACTION = 0.8  # the worker gives up by itself this far into the time limit
MEMORY_LIMIT_BYTES = 4 << 30  # worker address space allowed on top of its loaded size
WORKER_START_TIMEOUT_S = 120.0  # importing Math-Verify (and SymPy) on a loaded machine can be slow
MEMO_SIZE = 65536  # definite verdicts kept, least recently used dropped first
_GSM8K = re.compile(r"####\s*([^\n]+)")
_PLAIN_NUMBER = re.compile(r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?")  # commas only as thousands separators
# The worker's whole program: argv is [-c, folder holding the lensrl package, socket fd]. The folder goes
# first on sys.path, ahead of the working directory, so the worker imports the parent's lensrl, installed or not.
_WORKER_CODE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path.insert(0, sys.argv[1]); "
    "from multiprocessing.connection import Connection; import lensrl.rollout.verify as v; "
    "v._worker_main(Connection(int(sys.argv[2])))"
)

_STATS = dict.fromkeys(("calls", "unparseable", "timeouts", "retries", "errors", "worker_restarts"), 0)
_lock = threading.Lock()  # one request at a time on the socket
_memo: OrderedDict[tuple[str, str], bool] = OrderedDict()
_memo_lock = threading.Lock()  # separate from `_lock`, so a memoised verdict never waits on the worker
_worker: tuple[subprocess.Popen[bytes], Connection] | None = None
_worker_owner_pid = 0  # a forked child must not talk to its parent's worker
_worker_starts = 0
_in_process = False  # set once no worker could start


def stats() -> dict[str, int]:
    """A copy of the cumulative counters: calls, unparseable, timeouts, retries, errors, worker_restarts."""
    return dict(_STATS)


def extract_answer(completion: str) -> str | None:
    """Content of the last balanced `\\boxed{...}`, else the text after the last `####`, else None."""
    start, end = completion.rfind("\\boxed{"), len(completion)
    for _ in range(MAX_BOX_TRIES):  # bounded: hostile text can hold thousands of unbalanced boxes
        if start == -1:
            break
        depth = 0
        for i in range(start + len("\\boxed"), end):
            c = completion[i]
            depth += (c == "{") - (c == "}")
            if depth == 0:
                return completion[start + len("\\boxed{") : i].strip()
        # unbalanced: try an earlier box. It cannot close after this one opens (this one never gets
        # back to depth 0), so it is scanned only up to here and all tries together read the text once.
        start, end = completion.rfind("\\boxed{", 0, start), start
    matches = _GSM8K.findall(completion)
    if matches:
        return matches[-1].strip().replace(",", "")
    return None


def verify_math(completion: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when the completion's final answer equals `gold` (Math-Verify equivalence).

    Returns within about `timeout_s`, or twice that when the first attempt times out and is retried
    (plus the worker's start-up, a second or two, when it starts or restarts after a kill).
    """
    _STATS["calls"] += 1
    answer = extract_answer(completion)
    if not answer or len(answer) > MAX_ANSWER_CHARS:
        _STATS["unparseable"] += 1
        return False
    gold = str(gold).strip()
    fast = _fast_verdict(answer, gold)
    return fast if fast is not None else _equivalent(answer, gold, timeout_s)


def _fast_verdict(answer: str, gold: str) -> bool | None:
    """The verdict where no parsing is needed, else None."""
    if answer == gold:
        return True
    if _PLAIN_NUMBER.fullmatch(answer) and _PLAIN_NUMBER.fullmatch(gold):
        if Decimal(answer.replace(",", "")) == Decimal(gold.replace(",", "")):
            return True
        if "." not in answer and "." not in gold:
            return False  # distinct integers (unequal decimals go to Math-Verify, which rounds)
    return None


def _equivalent(answer: str, gold: str, timeout_s: float) -> bool:
    """Math-Verify's verdict, memoised when definite; a timed-out attempt is retried once, then False."""
    key = (answer, gold)  # a definite verdict does not depend on the time limit it was reached within
    with _memo_lock:
        if key in _memo:
            _memo.move_to_end(key)
            return _memo[key]
    verdict = _attempt(answer, gold, timeout_s)
    if verdict is None:
        _STATS["timeouts"] += 1
        _STATS["retries"] += 1
        verdict = _attempt(answer, gold, timeout_s)
    if verdict is None:
        _STATS["timeouts"] += 1
        return False  # not memoised: the next call with this pair tries again
    with _memo_lock:
        _memo[key] = verdict
        if len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return verdict


def _attempt(answer: str, gold: str, timeout_s: float) -> bool | None:
    """One check, in the worker (started if there is none) or in-process; None when it timed out."""
    global _in_process
    with _lock:
        if not _in_process:
            try:
                _ensure_worker()
            except Exception as e:  # e.g. no process spawning here, or no `sys.executable`
                _in_process = True
                warnings.warn(f"lensrl.rollout.verify: no worker process ({e!r}); Math-Verify runs in-process "
                              "with its own timeouts, which cannot stop C-level work (and are off outside the main thread)",
                              RuntimeWarning, stacklevel=4)
        if _in_process:
            in_main_thread = threading.current_thread() is threading.main_thread()
            return _math_verify(answer, gold, max(1, round(timeout_s)) if in_main_thread else None)
        return _ask_worker(answer, gold, timeout_s)


def _math_verify(answer: str, gold: str, timeout_s: int | None) -> bool | None:
    """Math-Verify equivalence of two answers, each read as the content of a `\\boxed{}`.

    None when Math-Verify's own timeout (`timeout_s`, in whole seconds) fired. Its other errors are a
    False verdict, as Math-Verify makes them by default; this asks it to raise so as to tell the two apart.
    """
    try:
        gold_parsed = parse(f"\\boxed{{{gold}}}", parsing_timeout=timeout_s, raise_on_error=True)
        answer_parsed = parse(f"\\boxed{{{answer}}}", parsing_timeout=timeout_s, raise_on_error=True)
    except TimeoutException:
        return None
    except Exception:
        return False
    timed_out = False
    for g, t in itertools.product(gold_parsed, answer_parsed):  # what `verify` does with two lists
        try:
            if verify(g, t, timeout_seconds=timeout_s, raise_on_error=True):
                return True
        except TimeoutException:
            timed_out = True
        except Exception:
            pass
    return None if timed_out else False


def _ensure_worker() -> None:
    """Start the worker if there is none, or if it died (killed from outside, or after a crash)."""
    global _worker, _worker_owner_pid, _worker_starts
    if _worker is not None and _worker_owner_pid != os.getpid():
        _worker = None  # inherited through fork: the process belongs to our parent
    if _worker is not None and _worker[0].poll() is not None:
        _stop_worker()
    if _worker is not None:
        return
    conn, child_conn = multiprocessing.Pipe()  # duplex: a socket pair
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding the lensrl package
    try:
        process = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CODE, package_parent, str(child_conn.fileno())],
            pass_fds=(child_conn.fileno(),),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,  # the caller's stdout may be data; the worker's stderr stays for tracebacks
        )
    except BaseException:
        conn.close()
        raise
    finally:
        child_conn.close()  # the worker holds its own copy; without ours, its death is an EOF here
    try:
        ready = conn.poll(WORKER_START_TIMEOUT_S) and conn.recv() == "ready"
    except (EOFError, OSError):
        ready = False
    if not ready:
        process.kill()
        process.wait()
        conn.close()
        raise RuntimeError(f"the verifier worker did not start (exit code {process.returncode})")
    _worker, _worker_owner_pid = (process, conn), os.getpid()
    if _worker_starts:
        _STATS["worker_restarts"] += 1
    _worker_starts += 1


def _stop_worker() -> None:
    global _worker
    if _worker is None or _worker_owner_pid != os.getpid():
        return
    process, conn = _worker
    _worker = None
    conn.close()
    process.kill()
    process.wait()


atexit.register(_stop_worker)


def _ask_worker(answer: str, gold: str, timeout_s: float) -> bool | None:
    """The worker's verdict, or None when it timed out (by its own alarm, or killed here at `timeout_s`).

    A worker exception or crash is False, counted in `errors`; timeouts are counted by the caller.
    """
    assert _worker is not None
    conn = _worker[1]
    try:
        conn.send((answer, gold, timeout_s))
        if not conn.poll(timeout_s):
            _stop_worker()
            return None
        reply = conn.recv()
    except (EOFError, OSError):  # the worker died mid-request
        _STATS["errors"] += 1
        _stop_worker()
        return False
    if reply == "timeout":
        return None
    if reply == "error":
        _STATS["errors"] += 1
    return reply is True


class _SoftTimeout(BaseException):
    """Raised in the worker by its alarm; a BaseException so that Math-Verify's handlers let it through."""


def _raise_soft_timeout(signum: int, frame: object) -> None:
    raise _SoftTimeout


def _worker_main(conn: Connection) -> None:
    """Worker loop: (answer, gold, timeout_s) in; True, False, "timeout" or "error" out. Ends on EOF."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the parent
    signal.signal(signal.SIGALRM, _raise_soft_timeout)
    logging.getLogger("math_verify").setLevel(logging.ERROR)  # our alarm replaces its timeouts
    _math_verify("1", "1", None)  # warm up Math-Verify's lazy imports before any timed request
    _limit_memory(MEMORY_LIMIT_BYTES)
    conn.send("ready")
    while True:
        try:
            answer, gold, timeout_s = conn.recv()
        except EOFError:
            return
        signal.setitimer(signal.ITIMER_REAL, SOFT_TIMEOUT_FRACTION * timeout_s)
        try:
            reply: bool | str = bool(_math_verify(answer, gold, None))  # no Math-Verify timeout: never None
        except _SoftTimeout:
            reply = "timeout"
        except Exception:  # MemoryError included
            reply = "error"
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
        conn.send(reply)


def _limit_memory(extra_bytes: int) -> None:
    """Cap the address space at its current size plus `extra_bytes`, where the platform allows it."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            used = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = used + extra_bytes if hard == resource.RLIM_INFINITY else min(used + extra_bytes, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass  # no /proc or no RLIMIT_AS (not Linux): the time limit still holds
