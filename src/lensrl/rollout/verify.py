"""Answer checking: the final answer of a completion against a gold answer, with Math-Verify.

The final answer is the content of the last balanced `\\boxed{...}` (or a GSM8K-style `#### N`:
`lensrl.data.answers.extract_answer`).
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

`MathVerifier` is the verifier (`lensrl.rollout.verifier`) every command scores with unless given
another; `verify_math(completion, gold)` is the process's default instance, `MATH_VERIFIER`, as a
function; `as_verifier` turns what a caller passes (a verifier, `verify_math` or any plain function)
into a verifier. Each `MathVerifier` counts in its own `counts` (`VerifyCounts`): `calls`,
`unparseable` (no final answer, or too long), `timeouts` (every timed-out attempt), `retries`
(attempts repeated after a timeout), `errors` (worker exceptions, memory errors and crashes) and
`worker_restarts` (the ones its calls caused), and keeps its own memo. All of them share one
worker, `WORKER`: the process is an OS resource that takes seconds to start, and a verdict depends
only on (answer, gold), so one per interpreter is enough, and a study that makes many verifiers does
not start many processes.
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
import warnings
from collections import OrderedDict
from decimal import Decimal
from multiprocessing.connection import Connection
from pathlib import Path

from math_verify import parse, verify
from math_verify.errors import TimeoutException

from lensrl.data.answers import extract_answer
from lensrl.rollout.verifier import FunctionVerifier, Verifier, VerifierLike, VerifyCounts

MAX_ANSWER_CHARS = 256  # a longer "final answer" is treated as unparseable
DEFAULT_TIMEOUT_S = 3.0
SOFT_TIMEOUT_FRACTION = 0.8  # the worker gives up by itself this far into the time limit
MEMORY_LIMIT_BYTES = 4 << 30  # worker address space allowed on top of its loaded size
WORKER_START_TIMEOUT_S = 120.0  # importing Math-Verify (and SymPy) on a loaded machine can be slow
MEMO_SIZE = 65536  # definite verdicts kept, least recently used dropped first
_PLAIN_NUMBER = re.compile(r"-?(?:[1-9]\d{0,2}(?:,\d{3})+|\d+)(?:\.\d+)?")  # commas only as thousands separators
# The worker's whole program: argv is [-c, folder holding the lensrl package, socket fd]. The folder goes
# first on sys.path, ahead of the working directory, so the worker imports the parent's lensrl, installed or not.
_WORKER_CODE = (
    "import signal, sys; signal.signal(signal.SIGINT, signal.SIG_IGN); sys.path.insert(0, sys.argv[1]); "
    "from multiprocessing.connection import Connection; import lensrl.rollout.verify as v; "
    "v._worker_main(Connection(int(sys.argv[2])))"
)


def verify_math(completion: str, gold: str, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
    """True when the completion's final answer equals `gold` (Math-Verify equivalence).

    Returns within about `timeout_s`, or twice that when the first attempt times out and is retried
    (plus the worker's start-up, a second or two, when it starts or restarts after a kill). Counted in
    `MATH_VERIFIER.counts`.
    """
    return MATH_VERIFIER(completion, gold, timeout_s)


def as_verifier(reward: VerifierLike) -> Verifier:
    """The verifier to score with: a `Verifier` as it is, `verify_math` as `MATH_VERIFIER` (whose counts it
    keeps), any other plain function wrapped in a `FunctionVerifier`."""
    if isinstance(reward, Verifier):
        return reward
    return MATH_VERIFIER if reward is verify_math else FunctionVerifier(reward)


class MathVerifier(Verifier):
    """The final answer of a completion against the gold answer with Math-Verify (module docstring).

    `timeout_s` bounds each attempt; `worker` is the process that runs Math-Verify (the shared `WORKER`).
    """

    def __init__(self, timeout_s: float = DEFAULT_TIMEOUT_S, worker: MathVerifyWorker | None = None) -> None:
        super().__init__()
        self.timeout_s = timeout_s
        self.worker = WORKER if worker is None else worker
        self._memo: OrderedDict[tuple[str, str], bool] = OrderedDict()
        self._memo_lock = threading.Lock()  # apart from the worker's, so a memoised verdict never waits on it

    def __call__(self, completion: str, gold: str, timeout_s: float | None = None) -> bool:
        """True when the completion's final answer equals `gold`; `timeout_s` (None: this verifier's)
        bounds each attempt."""
        self.counts.calls += 1
        answer = extract_answer(completion)
        if not answer or len(answer) > MAX_ANSWER_CHARS:
            self.counts.unparseable += 1
            return False
        gold = str(gold).strip()
        fast = _fast_verdict(answer, gold)
        return (
            fast
            if fast is not None
            else self._equivalent(answer, gold, self.timeout_s if timeout_s is None else timeout_s)
        )

    def _equivalent(self, answer: str, gold: str, timeout_s: float) -> bool:
        """Math-Verify's verdict, memoised when definite; a timed-out attempt is retried once, then False."""
        key = (answer, gold)  # a definite verdict does not depend on the time limit it was reached within
        with self._memo_lock:
            if key in self._memo:
                self._memo.move_to_end(key)
                return self._memo[key]
        verdict = self.worker.verdict(answer, gold, timeout_s, self.counts)
        if verdict is None:
            self.counts.timeouts += 1
            self.counts.retries += 1
            verdict = self.worker.verdict(answer, gold, timeout_s, self.counts)
        if verdict is None:
            self.counts.timeouts += 1
            return False  # not memoised: the next call with this pair tries again
        with self._memo_lock:
            self._memo[key] = verdict
            if len(self._memo) > MEMO_SIZE:
                self._memo.popitem(last=False)
        return verdict


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


class MathVerifyWorker:
    """The worker process that runs Math-Verify (module docstring), started on first need and replaced
    when it dies; one request at a time. Where none can start, `in_process` is set and Math-Verify runs
    in this process from then on."""

    def __init__(self) -> None:
        self.in_process = False
        self._lock = threading.Lock()  # one request at a time on the socket
        self._process: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._owner_pid = 0  # a forked child must not talk to its parent's worker
        self._starts = 0

    @property
    def pid(self) -> int | None:
        """The worker's process id while this process has one."""
        return self._process.pid if self._process is not None and self._owner_pid == os.getpid() else None

    def verdict(self, answer: str, gold: str, timeout_s: float, counts: VerifyCounts) -> bool | None:
        """One check, in the worker (started if there is none) or in-process; None when it timed out.

        Errors and restarts are counted in `counts`; timeouts are the caller's to count.
        """
        with self._lock:
            if not self.in_process:
                try:
                    self._ensure_started(counts)
                except Exception as e:  # e.g. no process spawning here, or no `sys.executable`
                    self.in_process = True
                    warnings.warn(
                        f"lensrl.rollout.verify: no worker process ({e!r}); Math-Verify runs in-process "
                        "with its own timeouts, which cannot stop C-level work (and are off outside the "
                        "main thread)",
                        RuntimeWarning,
                        stacklevel=4,
                    )
            if self.in_process:
                in_main_thread = threading.current_thread() is threading.main_thread()
                return _math_verify(answer, gold, max(1, round(timeout_s)) if in_main_thread else None)
            return self._ask(answer, gold, timeout_s, counts)

    def _ensure_started(self, counts: VerifyCounts) -> None:
        """Start the worker if there is none, or if it died (killed from outside, or after a crash)."""
        if self._process is not None and self._owner_pid != os.getpid():
            self._process = self._conn = None  # inherited through fork: the process belongs to our parent
        if self._process is not None and self._process.poll() is not None:
            self.stop()
        if self._process is not None:
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
        self._process, self._conn, self._owner_pid = process, conn, os.getpid()
        if self._starts:
            counts.worker_restarts += 1
        self._starts += 1

    def stop(self) -> None:
        """Kill the worker, if this process started one (a new one starts on the next check)."""
        if self._process is None or self._owner_pid != os.getpid():
            return
        process, conn = self._process, self._conn
        self._process = self._conn = None
        conn.close()
        process.kill()
        process.wait()

    def _ask(self, answer: str, gold: str, timeout_s: float, counts: VerifyCounts) -> bool | None:
        """The worker's verdict, or None when it timed out (by its own alarm, or killed here at `timeout_s`).

        A worker exception or crash is False, counted in `errors`.
        """
        assert self._conn is not None
        try:
            self._conn.send((answer, gold, timeout_s))
            if not self._conn.poll(timeout_s):
                self.stop()
                return None
            reply = self._conn.recv()
        except (EOFError, OSError):  # the worker died mid-request
            counts.errors += 1
            self.stop()
            return False
        if reply == "timeout":
            return None
        if reply == "error":
            counts.errors += 1
        return reply is True


WORKER = MathVerifyWorker()  # the process's one worker, shared by every MathVerifier
atexit.register(WORKER.stop)
MATH_VERIFIER = MathVerifier()  # the default verifier; `verify_math` counts here


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
