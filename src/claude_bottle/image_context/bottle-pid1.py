# The bottle's PID 1: bottle-pid1.py PROGRAM ARGS... (run by a copy of python3 the agent's user may run but
# not read, so that no process of the agent's can attach to it: see the Dockerfile).
#
# Everything in a bottle runs as the agent's user, PID 1 too (on Kubernetes a container has one user), so the
# agent may signal it. A container ends with its PID 1, and on Kubernetes a pod's container is not started
# again. So this process handles, blocks and waits for no signal at all: the kernel drops every signal sent
# to a PID namespace's first process that it does not handle, from inside the namespace SIGKILL and SIGSTOP
# too. Only the engine's SIGKILL, from outside, ends it (Docker removes a bottle with one; Kubernetes sends
# one when the pod's 1 s grace is over). A handler that judged the sender would not do: the kernel reports
# a signal whose details did not fit the sender's queue as kill(2)'s from outside, and the agent can fill it.
# It starts PROGRAM (bottle-init), whose failure at start ends the bottle with its status; once PROGRAM has
# done its work (exit 0) or has been killed, this process goes on, reaping the orphans it inherits.
import os
import signal
import sys
import time

signal.signal(signal.SIGINT, signal.SIG_DFL)  # Python's own handler would let SIGINT in
child = os.fork()
if child == 0:
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as e:
        print(f"error: starting {sys.argv[1]}: {e.strerror or e}", flush=True)
        os._exit(127)
while True:
    try:
        pid, status = os.wait()
    except ChildProcessError:  # none now: an orphan of the agent's comes here, and is reaped within a second
        time.sleep(1)
        continue
    if pid == child:  # once: a later process of the agent's may be given its number
        child = None
        if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
            sys.exit(os.WEXITSTATUS(status))  # the bottle could not be made ready
