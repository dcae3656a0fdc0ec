"""The task runner: results reach the GUI thread, and cancelled tasks that have not started never run."""
from __future__ import annotations

import threading

from PySide6.QtCore import QThreadPool

from fgdesk.gui.workers import TaskRunner


def test_tasks_cancelled_before_they_start_never_run(qtbot):
    pool = QThreadPool()
    pool.setMaxThreadCount(1)
    runner = TaskRunner(pool)
    gate = threading.Event()
    ran: list[int] = []
    done: list[object] = []
    cancelled: list[int] = []

    started = threading.Event()

    def blocker(ctx):
        started.set()
        gate.wait(10)
        return "first"

    def job(number):
        def fn(ctx):
            ran.append(number)
            return number
        return fn

    runner.start(blocker, on_done=done.append, name="blocker")
    for number in range(4):
        runner.start(job(number), on_done=done.append, on_cancelled=lambda n=number: cancelled.append(n), name=f"job {number}")
    assert started.wait(10)
    runner.cancel_all()  # the blocker is running; the four wait in the queue
    gate.set()
    qtbot.waitUntil(lambda: not runner.busy(), timeout=10_000)
    assert ran == [] and done == ["first"]  # a task cancelled while running still delivers its result
    assert sorted(cancelled) == [0, 1, 2, 3]
    # The pool is free at once for new work.
    runner.start(job(9), on_done=done.append, name="after")
    qtbot.waitUntil(lambda: done[-1] == 9, timeout=5_000)
    assert pool.waitForDone(5_000)
