# The bottle's PID 1: bottle-pid1.py PROGRAM ARGS... (run by a copy of python3 the agent's user may run but
# not read, so that no process of the agent's can attach to it: see the Dockerfile).
#
# Everything in a bottle runs as the agent's user, PID 1 too (on Kubernetes a container has one user), so the
# agent may signal it. A container ends with its PID 1, and on Kubernetes a pod's container is never started
# again: its files, the agent's work among them, would be gone. So this process ends only when the engine
# asks, from outside the bottle, and never because of anything the agent does:
# - The kernel drops a signal sent to a PID namespace's first process from inside it unless that process
#   handles (or blocks) it: SIGKILL and SIGSTOP from the agent do nothing.
# - SIGTERM, SIGINT and SIGHUP are blocked and taken with sigwaitinfo: one sent with kill(2) from outside the
#   namespace (the engine's) says sender 0, one from inside names its sender and is ignored. A sender cannot
#   make itself look like 0: rt_sigqueueinfo(2) refuses a code of kill(2)'s (SI_USER) to another process.
# - It starts PROGRAM (bottle-init), whose failure at start ends the bottle with its status; once PROGRAM has
#   done its work (exit 0) or has been killed, this process goes on, reaping the orphans it inherits.
import os
import signal
import sys

ASKED = {signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
signal.pthread_sigmask(signal.SIG_BLOCK, ASKED | {signal.SIGCHLD})
child = os.fork()
if child == 0:
    signal.pthread_sigmask(signal.SIG_SETMASK, set())
    try:
        os.execvp(sys.argv[1], sys.argv[1:])
    except OSError as e:
        print(f"error: starting {sys.argv[1]}: {e.strerror or e}", flush=True)
        os._exit(127)
SI_USER = 0
while True:
    info = signal.sigwaitinfo(ASKED | {signal.SIGCHLD})
    if info.si_signo in ASKED:
        if info.si_code == SI_USER and info.si_pid == 0:
            sys.exit(128 + info.si_signo)
        continue
    while True:  # SIGCHLD: one for any number of children ended
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            break
        if pid == 0:
            break
        if pid == child:  # once: a later process of the agent's may be given its number
            child = None
            if os.WIFEXITED(status) and os.WEXITSTATUS(status) != 0:
                sys.exit(os.WEXITSTATUS(status))  # the bottle could not be made ready
