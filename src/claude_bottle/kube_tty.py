"""`exec` with a terminal on Kubernetes: run as `python -m claude_bottle.kube_tty CONTAINER WORKDIR ARGV...`
inside our screen filter's pseudo-terminal (screen.py), it puts that terminal in raw mode and joins it to
the command's terminal in the pod: keys in, output out, the window's size on every change."""

from __future__ import annotations

import json
import os
import select
import signal
import sys
import termios
import tty


def main(argv: list[str]) -> int:
    from . import kube, runtime
    from .errors import BottleError

    name, workdir, command = argv[0], argv[1], argv[2:]
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd) if os.isatty(fd) else None
    resized = [True]
    reading = [fd]

    def on_resize(*_):
        resized[0] = True

    signal.signal(signal.SIGWINCH, on_resize)
    # Raw before anything slow: opening the exec takes a while on a busy cluster, and keys typed meanwhile
    # must wait for the pod (not be echoed here), and Ctrl-C be a key for it (not a signal that kills this).
    if saved is not None:
        tty.setraw(fd)
    ws, failed = None, None
    try:
        cluster = runtime.connect()
        ws = cluster._open_exec(name, command, workdir, stdin=True, tty=True)
        while ws.is_open():
            if resized[0] and saved is not None:
                resized[0] = False
                rows, cols = os.get_terminal_size(fd).lines, os.get_terminal_size(fd).columns
                ws.write_channel(4, json.dumps({"Width": cols, "Height": rows}).encode())
            ready, _, _ = select.select(reading + [ws.sock.sock], [], [], 0.5)
            if fd in ready:
                data = os.read(fd, 65536)
                if not data:
                    ws.close_channel(0)
                    reading.clear()
                else:
                    ws.write_stdin(data)
            ws.update(timeout=0)
            out = ws.read_channel(1)
            if out:
                os.write(1, out)
        out = ws.read_channel(1)
        if out:
            os.write(1, out)
        return kube._exit_status(ws)
    except BottleError as e:
        failed = e
    finally:
        if saved is not None:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)
        if ws is not None:
            ws.close()
    print(f"Error: {failed}", file=sys.stderr)  # once the terminal is itself again
    return failed.exit_code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
