"""The eSpeak "zygote": a lean process (numpy + the eSpeak library only) that forks one child per
synthesis request, so every utterance starts from the same freshly initialised library state.

Run by `speechrep.data.synth.workers` as a script; it talks length-prefixed pickles over stdin/stdout:
requests `(key, kwargs for espeak.synthesize)` then `None`; replies
`(key, ok, (int16 sample bytes, phonemes, words) | error text)`.
It deliberately imports nothing from speechrep: a small process forks in about a millisecond, a process
holding torch takes tens of milliseconds."""

import importlib.util
import os
import pickle
import selectors
import struct
import sys

_HEADER = struct.Struct("<Q")


def _load_espeak():
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "espeak.py")
    spec = importlib.util.spec_from_file_location("_speechrep_espeak", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up while building classes
    spec.loader.exec_module(module)
    return module


def _write_frame(fd: int, obj) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(data)) + data)
    while view:
        view = view[os.write(fd, view) :]


def main() -> None:
    sys.path.pop(0)  # the script's folder holds modules (text.py, ...) that must not shadow anything
    max_children = int(sys.argv[1])
    espeak = _load_espeak()
    espeak.initialize()
    stdin, stdout = sys.stdin.fileno(), sys.stdout.fileno()
    selector = selectors.DefaultSelector()
    selector.register(stdin, selectors.EVENT_READ, None)
    pending, inbox, children, done_reading = [], bytearray(), {}, False
    while not (done_reading and not pending and not children):
        while pending and len(children) < max_children:
            key, kwargs = pending.pop(0)
            read_fd, write_fd = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(read_fd)
                try:
                    synth = espeak.synthesize(**kwargs)  # plain types: the parent lacks this module name
                    reply = (key, True, (synth.samples.tobytes(), synth.phonemes, synth.words))
                except BaseException as err:  # reported to the parent, which skips the utterance
                    reply = (key, False, f"{type(err).__name__}: {err}")
                _write_frame(write_fd, reply)
                os._exit(0)
            os.close(write_fd)
            children[read_fd] = (pid, key, bytearray())
            selector.register(read_fd, selectors.EVENT_READ, pid)
        for sel_key, _ in selector.select():
            chunk = os.read(sel_key.fd, 1 << 20)
            if sel_key.fd == stdin:
                if not chunk:
                    selector.unregister(stdin)
                    done_reading = True
                    continue
                inbox += chunk
                while (
                    len(inbox) >= _HEADER.size and len(inbox) >= _HEADER.size + _HEADER.unpack_from(inbox)[0]
                ):
                    size = _HEADER.unpack_from(inbox)[0]
                    request = pickle.loads(inbox[_HEADER.size : _HEADER.size + size])
                    del inbox[: _HEADER.size + size]
                    if request is None:
                        done_reading = True
                    else:
                        pending.append(request)
            elif chunk:
                children[sel_key.fd][2].extend(chunk)
            else:
                pid, key, frame = children.pop(sel_key.fd)
                selector.unregister(sel_key.fd)
                os.close(sel_key.fd)
                os.waitpid(pid, 0)
                if frame:  # already a complete length-prefixed reply
                    view = memoryview(frame)
                    while view:
                        view = view[os.write(stdout, view) :]
                else:
                    _write_frame(stdout, (key, False, "synthesis child died without a reply"))


if __name__ == "__main__":
    main()
