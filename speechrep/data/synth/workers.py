"""Run synthesis jobs in freshly forked children of an initialised parent, a few at a time.

eSpeak NG keeps global state and is not thread-safe; forking one child per job from a parent that only
initialised the library makes every job start from the same state, so results do not depend on the
order or the number of workers."""
from __future__ import annotations

import logging
import os
import pickle
import selectors
import sys
from typing import Any, Callable, Iterable, Iterator

from tqdm import tqdm

from speechrep.data.synth import espeak

log = logging.getLogger(__name__)

Job = tuple[Callable[..., Any], tuple]


def _child(job: Job, write_fd: int) -> None:
    try:
        payload = pickle.dumps((True, job[0](*job[1])))
    except BaseException as err:  # reported to the parent, which skips the job
        payload = pickle.dumps((False, f"{type(err).__name__}: {err}"))
    with os.fdopen(write_fd, "wb") as pipe:
        pipe.write(payload)


def run_forked(jobs: Iterable[Job], num_workers: int = 2, desc: str = "synth",
               total: int | None = None) -> Iterator[tuple[int, Any]]:
    """Yield `(index, result)` for each job in input order; a failed job yields `(index, None)` and logs."""
    espeak.initialize()
    jobs = iter(enumerate(jobs))
    selector = selectors.DefaultSelector()
    buffers: dict[int, bytearray] = {}
    finished: dict[int, Any] = {}
    next_to_yield, exhausted = 0, False
    bar = tqdm(total=total, desc=desc, disable=not sys.stderr.isatty(), leave=False)
    try:
        while True:
            while not exhausted and len(buffers) < max(1, num_workers):
                item = next(jobs, None)
                if item is None:
                    exhausted = True
                    break
                index, job = item
                read_fd, write_fd = os.pipe()
                pid = os.fork()
                if pid == 0:  # the child never returns into the caller's code
                    os.close(read_fd)
                    code = 0
                    try:
                        _child(job, write_fd)
                    except BaseException:
                        code = 1
                    os._exit(code)
                os.close(write_fd)
                buffers[read_fd] = bytearray()
                selector.register(read_fd, selectors.EVENT_READ, (index, pid))
            if not buffers:
                break
            for key, _ in selector.select():
                chunk = os.read(key.fd, 1 << 20)
                if chunk:
                    buffers[key.fd] += chunk
                    continue
                index, pid = key.data
                selector.unregister(key.fd)
                os.close(key.fd)
                os.waitpid(pid, 0)
                data = buffers.pop(key.fd)
                ok, result = pickle.loads(data) if data else (False, "worker died without a result")
                if not ok:
                    log.warning("synthesis job %d failed and is skipped: %s", index, result)
                    result = None
                finished[index] = result
                bar.update(1)
            while next_to_yield in finished:
                yield next_to_yield, finished.pop(next_to_yield)
                next_to_yield += 1
    finally:
        bar.close()
        selector.close()
