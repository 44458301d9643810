"""A process asked to stop while its main thread is writing a log line stops.

The log writer holds a lock around each line. A Python signal handler runs on the main thread
between two of its bytecodes, so a handler that logs, arriving while that thread is inside a
write, waits for a lock its own thread holds: the process hangs until it is killed. The
credentials face's main thread writes a line after every request (its event loop), the relay's
after every cycle; a SIGTERM just after a request once hung the face in CI. Each program below
logs from its main thread without pause and is stopped mid-stream, many times over."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROUNDS = 8
STOP_WITHIN = 10.0

# The gRPC services, the platform, statistics and the relay: the main thread waits on
# until_signalled(); here it logs while it waits, as the relay's loop does.
WAITING_PROCESS = """
    import sys, time
    from shared.logging import configure
    from shared.background import until_signalled
    import structlog
    configure("probe", "json")
    log = structlog.get_logger("probe")
    stopping = until_signalled("probe.stopping")
    sys.stdout.write("ready\\n"); sys.stdout.flush()
    n = 0
    while not stopping.is_set():
        n += 1
        log.info("probe.tick", n=n, padding="x" * 200)
    log.info("probe.stopped")
"""

# The HTTP faces: uvicorn's event loop on the main thread, a task logging on that loop.
SERVING_PROCESS = """
    import asyncio, socket, sys
    import structlog, uvicorn
    from shared.logging import configure
    from shared.web import Server
    configure("probe", "json")
    log = structlog.get_logger("probe")

    async def app(scope, receive, send):
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    asyncio.get_running_loop().create_task(chatter())
                    await send({"type": "lifespan.startup.complete"})
                    sys.stdout.write("ready\\n"); sys.stdout.flush()
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    async def chatter():
        n = 0
        while True:
            n += 1
            log.info("probe.tick", n=n, padding="x" * 200)
            if n % 50 == 0:
                await asyncio.sleep(0)

    sock = socket.socket(); sock.bind(("127.0.0.1", 0))
    Server(uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=1)).run(
        sockets=[sock])
    log.info("probe.stopped")
"""


def stop_while_logging(program: str) -> tuple[int | None, list[dict[str, object]]]:
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(program)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    try:
        assert proc.stdout.readline() == b"ready\n", proc.stderr.read().decode()[-2000:] \
            if proc.stderr else ""
        time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=STOP_WITHIN)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return None, []
        lines = [json.loads(line) for line in err.decode().splitlines() if line.strip()]
        return proc.returncode, lines
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize("program", [WAITING_PROCESS, SERVING_PROCESS],
                         ids=["until_signalled", "http_face"])
def test_a_stop_asked_mid_line_stops_the_process_and_says_so(program: str) -> None:
    for round_ in range(ROUNDS):
        code, lines = stop_while_logging(program)
        assert code is not None, f"round {round_}: still running {STOP_WITHIN}s after SIGTERM"
        assert code == 0, f"round {round_}: exit {code}"
        events = [line["event"] for line in lines]
        stopping = [e for e in events if e in ("probe.stopping", "service.stopping")]
        assert stopping, f"round {round_}: the stop was not logged"
        assert events[-1] == "probe.stopped"
        # Every line whole: no line written into the middle of another.
        assert all(line.get("service") == "probe" for line in lines)


# A service's main thread waits on until_signalled() while dozens of other threads run; the
# kernel may give the process's SIGTERM to any of them. Here it is given to one on purpose.
SIGNAL_TO_ANOTHER_THREAD = """
    import signal, sys, threading, time
    from shared.logging import configure
    from shared.background import until_signalled
    import structlog
    configure("probe", "json")
    log = structlog.get_logger("probe")
    stopping = until_signalled("probe.stopping")
    worker = threading.Thread(target=time.sleep, args=(60,), daemon=True)
    worker.start()
    threading.Timer(0.2, signal.pthread_kill, (worker.ident, signal.SIGTERM)).start()
    stopping.wait()
    log.info("probe.stopped")
"""


def test_a_stop_taken_by_another_thread_than_the_main_one_stops_the_process() -> None:
    """A SIGTERM that lands on a thread other than the main one does not wake the main
    thread from its wait, and a Python handler runs only on the main thread: the stop used
    to be lost until a second signal or SIGKILL (a service once waited out `qiji run`'s 15 s
    so). It now reaches the waiting thread at once."""
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(SIGNAL_TO_ANOTHER_THREAD)],
                          cwd=REPO, capture_output=True, timeout=STOP_WITHIN + 5, check=False)
    assert proc.returncode == 0, proc.stderr.decode()[-2000:]
    assert time.monotonic() - started < 5
    events = [json.loads(line)["event"] for line in proc.stderr.decode().splitlines()
              if line.strip()]
    assert events == ["probe.stopping", "probe.stopped"]
