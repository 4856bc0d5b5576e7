"""ledger.deadlines: many bounds, one task; a moved deadline fires at its new time, once."""

from __future__ import annotations

import asyncio

from ledger.deadlines import Deadlines


async def test_moved_deadlines_fire_once_at_their_new_time_and_the_task_ends() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    started_s = loop.time()
    deadlines: Deadlines[str] = Deadlines(0.005, lambda key: fired.append((key, loop.time() - started_s)))
    deadlines.set("later-made-sooner", started_s + 60)
    deadlines.set("sooner-made-later", started_s + 0.02)
    deadlines.set("done-in-time", started_s + 0.02)
    deadlines.set("later-made-sooner", started_s + 0.05)
    deadlines.set("sooner-made-later", started_s + 0.15)
    deadlines.discard("done-in-time")
    for _ in range(500):  # both are due by 0.15 s; allow a loaded machine up to 5 s
        if len(fired) >= 2:
            break
        await asyncio.sleep(0.01)
    assert [key for key, _ in fired] == ["later-made-sooner", "sooner-made-later"]
    assert fired[0][1] >= 0.05 and fired[1][1] >= 0.15, "never before its (moved) deadline"
    assert len(deadlines) == 0
    for _ in range(500):
        if deadlines._task is not None and deadlines._task.done():
            break
        await asyncio.sleep(0.01)
    assert deadlines._task is not None and deadlines._task.done(), "nothing armed: the task ends"
    deadlines.set("re-armed", loop.time() + 0.01)  # a new key starts it again
    for _ in range(500):
        if len(fired) >= 3:
            break
        await asyncio.sleep(0.01)
    assert [key for key, _ in fired] == ["later-made-sooner", "sooner-made-later", "re-armed"]


async def test_close_stops_the_task_at_once() -> None:
    # Ledger.stop() closes its Deadlines: no sweeper may outlive its owner, pending on a loop
    # that may be closed next ("Task was destroyed but it is pending!").
    fired: list[str] = []
    deadlines: Deadlines[str] = Deadlines(60.0, fired.append)
    deadlines.set("a", asyncio.get_running_loop().time() + 0.01)
    task = deadlines._task
    assert task is not None and not task.done()
    deadlines.close()
    await asyncio.wait_for(asyncio.gather(task, return_exceptions=True), 5)
    assert task.cancelled() and len(deadlines) == 0 and fired == []
