"""Run synthesis jobs on both cores, deterministically.

eSpeak NG keeps global state, is not thread-safe and drifts inside a long-lived process, so each
utterance is spoken by a fresh child forked from a lean "zygote" process that only initialised the library
(`_zygote.py`; forking a process that holds torch would cost tens of milliseconds per utterance). The
rest of each job (resampling, effects, mixing, FLAC) is ordinary numpy work done by a pool of long-lived
workers. Results never depend on the number of workers or on their timing."""

from __future__ import annotations

import logging
import multiprocessing
import pickle
import struct
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from speechrep.data.synth.espeak import Synthesis
from speechrep.data.synth.render import UtteranceSpec, synthesis_request
from speechrep.storage import OutputError

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<Q")
_ZYGOTE = Path(__file__).with_name("_zygote.py")


class _Zygote:
    """The zygote subprocess: requests go in through a writer thread, replies are read here."""

    def __init__(self, max_children: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(_ZYGOTE), str(max_children)], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self.queue: deque = deque()
        self.ready = threading.Condition()
        self.writer = threading.Thread(target=self._write_loop, daemon=True)
        self.writer.start()

    def _write_loop(self) -> None:
        while True:
            with self.ready:
                while not self.queue:
                    self.ready.wait()
                request = self.queue.popleft()
            data = pickle.dumps(request, protocol=pickle.HIGHEST_PROTOCOL)
            try:
                self.proc.stdin.write(_HEADER.pack(len(data)) + data)
                self.proc.stdin.flush()
                if request is None:
                    self.proc.stdin.close()
                    return
            except BrokenPipeError:
                return

    def send(self, key: Any, request: dict | None) -> None:
        with self.ready:
            self.queue.append(None if request is None else (key, request))
            self.ready.notify()

    def receive(self) -> tuple[Any, bool, Any]:
        header = self.proc.stdout.read(_HEADER.size)
        if len(header) < _HEADER.size:
            raise RuntimeError(f"the eSpeak zygote exited (code {self.proc.poll()})")
        return pickle.loads(self.proc.stdout.read(_HEADER.unpack(header)[0]))

    def close(self) -> None:
        self.send(None, None)
        self.writer.join(timeout=10)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_EMPTY = Synthesis(np.zeros(0, np.int16))


class SynthesisRunner:
    """A zygote plus a worker pool, started once and reused for every split of every subset."""

    def __init__(self, num_workers: int = 2) -> None:
        self.num_workers = max(1, num_workers)
        # The pool is forked before the zygote starts so that no worker holds the zygote's pipes open.
        self.pool = multiprocessing.get_context("fork").Pool(self.num_workers)
        self.zygote = _Zygote(self.num_workers)

    def __enter__(self) -> SynthesisRunner:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(abort=exc_type is not None)

    def close(self, abort: bool = False) -> None:
        """Stop the zygote and the pool; `abort` (a run that failed) does not wait for work in flight."""
        if abort:
            self.zygote.proc.kill()  # its replies would never be read: a graceful stop could wait on the pipe
        self.zygote.close()
        self.pool.terminate()
        self.pool.join()

    def run(
        self, jobs: Sequence[tuple[list[UtteranceSpec], Callable[..., Any], tuple]], desc: str = "synth"
    ) -> Iterator[tuple[int, Any]]:
        """For each `(specs, fn, args)` yield `(index, fn(syntheses_of_specs, *args))` in order; a failed
        job yields `(index, None)` and a warning. Consume the iterator fully before the next `run`."""
        window = 8 * self.num_workers  # jobs in flight: bounds memory whatever the corpus size
        syntheses: dict[int, list] = {}
        missing: dict[int, int] = {}
        failed: set[int] = set()
        results: dict[int, Any] = {}
        submitted = 0
        with tqdm(total=len(jobs), desc=desc, disable=not sys.stderr.isatty(), leave=False) as bar:
            for index in range(len(jobs)):
                while submitted < len(jobs) and submitted < index + window:
                    specs = jobs[submitted][0]
                    syntheses[submitted] = [_EMPTY if not s.text else None for s in specs]
                    missing[submitted] = sum(1 for s in specs if s.text)
                    for k, spec in enumerate(specs):
                        if spec.text:
                            self.zygote.send((submitted, k), synthesis_request(spec))
                    if missing[submitted] == 0:
                        self._start(jobs, submitted, syntheses, results)
                    submitted += 1
                while index not in results and index not in failed:
                    (job, k), ok, payload = self.zygote.receive()
                    if not ok:
                        log.warning("%s: job %d: eSpeak failed (%s); skipped", desc, job, payload)
                        failed.add(job)
                    if job in failed:
                        continue
                    samples, phonemes, words = payload
                    syntheses[job][k] = Synthesis(np.frombuffer(samples, dtype=np.int16), phonemes, words)
                    missing[job] -= 1
                    if missing[job] == 0:
                        self._start(jobs, job, syntheses, results)
                syntheses.pop(index, None)
                result = None
                if index not in failed:
                    try:
                        result = results.pop(index).get()
                    except (OutputError, OSError):
                        raise  # a full or unwritable disk fails every job after it: stop the run
                    except Exception as err:  # one bad utterance must not stop the corpus
                        log.warning(
                            "%s: job %d failed (%s: %s); skipped", desc, index, type(err).__name__, err
                        )
                bar.update(1)
                yield index, result

    def _start(self, jobs, index: int, syntheses: dict[int, list], results: dict[int, Any]) -> None:
        _, fn, args = jobs[index]
        results[index] = self.pool.apply_async(fn, (syntheses.pop(index),) + tuple(args))
