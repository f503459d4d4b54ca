from __future__ import annotations

import asyncio
import time

from condorlab.jobs import JobStatusCache, State, host_of


def run(coro):
    return asyncio.run(coro)


def ads(*jobs):
    return [
        {"ClusterId": c, "ProcId": 0, "JobStatus": s, "RemoteHost": h, "HoldReason": r, "Owner": "alice"}
        for c, s, h, r in jobs
    ]


def test_one_query_serves_every_session_in_a_cycle():
    calls = []

    def query():
        calls.append(1)
        return ads((1, 2, "slot1_1@wn1.example.org", None), (2, 1, None, None))

    cache = JobStatusCache(query, max_age=60)

    async def many():
        return await asyncio.gather(*(cache.get(str(c)) for c in (1, 2, 3) * 30))

    infos = run(many())
    assert len(calls) == 1
    assert infos[0].state == State.RUNNING and infos[0].host == "wn1.example.org"
    assert infos[1].state == State.IDLE
    assert infos[2].state == State.GONE


def test_a_failed_query_reports_unknown_not_gone():
    answers = [ads((1, 2, "slot1@wn1", None)), RuntimeError("schedd timeout")]

    def query():
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    cache = JobStatusCache(query, max_age=0)
    assert run(cache.get("1")).state == State.RUNNING
    assert run(cache.get("1")).state == State.UNKNOWN


def test_held_jobs_carry_their_reason():
    cache = JobStatusCache(lambda: ads((7, 5, None, "Error from slot1@wn1: out of memory")), max_age=0)
    info = run(cache.get("7"))
    assert info.state == State.HELD and "out of memory" in info.hold_reason


def test_force_refreshes_a_fresh_cache():
    seen = []

    def query():
        seen.append(1)
        return ads((1, 1, None, None)) if len(seen) > 1 else []

    cache = JobStatusCache(query, max_age=3600)
    assert run(cache.get("1")).state == State.GONE
    assert run(cache.get("1")).state == State.GONE  # served from the cache
    assert run(cache.get("1", force=True)).state == State.IDLE
    assert len(seen) == 2


def test_host_of():
    assert host_of("slot1_1@wn1.example.org") == "wn1.example.org"
    assert host_of("") == ""


def test_the_queue_place_and_the_share_come_from_one_query_each_per_cycle():
    queue = [
        {"ClusterId": c, "ProcId": 0, "JobStatus": s, "QDate": q, "LastRejMatchReason": r}
        for c, s, q, r in ((7, 1, 100, "no match found"), (8, 1, 90, None), (9, 2, 80, None), (10, 1, 120, None))
    ]
    slots = [
        {"Machine": "wn1", "Cpus": 1, "Memory": 512, "TotalSlotCpus": 4, "TotalSlotMemory": 2048},
        {"Machine": "wn2", "Cpus": 0, "Memory": 0, "TotalSlotCpus": 4, "TotalSlotMemory": 2048},
    ]
    calls = []
    cache = JobStatusCache(lambda: calls.append("q") or queue, share_query=lambda: calls.append("c") or slots)
    info = run(cache.get("7"))
    assert calls == ["q", "c"]
    assert info.rejected == "no match found" and info.queued_at == 100
    assert cache.waiting_before("7") == 1, "job 8 waits longer; job 9 runs; job 10 came later"
    assert cache.waiting_before("10") == 2
    share = cache.share
    assert (share.free_cpus, share.total_cpus) == (1, 8)
    assert share.fits_now(1, 512) and not share.fits_now(2, 512)
    assert share.fits_ever(4, 2048) and not share.fits_ever(5, 512)


def test_a_collector_that_does_not_answer_leaves_the_share_unknown():
    def broken():
        raise RuntimeError("collector down")

    cache = JobStatusCache(lambda: [], share_query=broken)
    run(cache.get("1"))
    assert not cache.share.known and cache.share.slots == ()


def waiting_session(monkeypatch, queued_at: float):
    """A cache watching one waiting session job (7.0) at a clock set to 1000 s: (queue, reschedules asked,
    the clock, the cache, a look that waits for the reschedule it starts)."""
    now = [1000.0]
    queue = [{"ClusterId": 7, "ProcId": 0, "JobStatus": 1, "QDate": queued_at}]
    asked = []
    cache = JobStatusCache(lambda: queue, reschedule=lambda: asked.append(1), reschedule_after=30, max_age=0)
    monkeypatch.setattr(time, "time", lambda: now[0])

    def look():
        async def looking():
            await cache.get("7")
            if cache._rescheduling:
                await cache._rescheduling
                cache._rescheduling = None

        run(looking())

    return queue, asked, now, cache, look


def test_a_session_waiting_long_asks_for_a_reschedule_at_most_once_a_period(monkeypatch):
    queue, asked, now, cache, look = waiting_session(monkeypatch, 990)
    cache._looked_again.add("7.0")  # its second look is the next test's
    look()
    assert asked == [], "queued 10 s ago: the submission's own reschedule is enough"
    now[0] = 1025
    look()
    assert asked == [1], "waiting 35 s: the schedd is asked again"
    look()
    assert asked == [1], "not again within the period"
    cache._rescheduled -= 31
    look()
    assert asked == [1, 1]
    queue[0]["JobStatus"] = 2
    cache._rescheduled -= 31
    look()
    assert asked == [1, 1], "nothing waits: nothing asked"


def test_a_session_still_waiting_at_its_second_look_is_rescheduled_once(monkeypatch):
    """The seal's reschedule can be lost to a negotiation cycle already under way (jobs.SECOND_LOOK_AFTER)."""
    queue, asked, now, cache, look = waiting_session(monkeypatch, 999)
    look()
    assert asked == [], "queued a second ago: the seal's reschedule may yet serve"
    now[0] = 1004
    look()
    assert asked == [1], "still waiting 5 s after it was queued: asked once more"
    now[0] = 1010
    look()
    assert asked == [1], "once per job"
    queue.append({"ClusterId": 8, "ProcId": 0, "JobStatus": 1, "QDate": 1005})
    look()
    assert asked == [1, 1], "a new session gets its own second look"
    queue[:] = [{"ClusterId": 7, "ProcId": 0, "JobStatus": 2, "QDate": 999}]
    now[0] = 1020
    look()
    assert asked == [1, 1] and cache._looked_again == set(), "a job that started is forgotten"


def test_a_slow_or_failed_reschedule_holds_up_no_status_read():
    def slow():
        time.sleep(0.5)
        raise RuntimeError("schedd busy")

    queue = [{"ClusterId": 7, "ProcId": 0, "JobStatus": 1, "QDate": 1}]
    cache = JobStatusCache(lambda: queue, reschedule=slow, max_age=0)

    async def scenario():
        t0 = time.monotonic()
        first = await cache.get("7")
        second = await cache.get("7", force=True)
        took = time.monotonic() - t0
        await cache._rescheduling  # its failure is logged, not raised
        return first, second, took

    first, second, took = run(scenario())
    assert first.state == second.state == State.IDLE and took < 0.4


def test_a_lost_node_is_avoided_until_the_collector_hears_from_it_again():
    slots = [
        {"Machine": "wn1", "Cpus": 4, "Memory": 2048, "LastHeardFrom": 900},
        {"Machine": "wn2", "Cpus": 4, "Memory": 2048, "LastHeardFrom": 900},
    ]
    cache = JobStatusCache(lambda: [], share_query=lambda: slots, max_age=0, avoid_for=600)
    lost_at = time.time() - 10
    cache.node_lost("wn2", when=lost_at)
    run(cache.get("1"))
    assert cache.avoided_nodes() == [["wn2", int(lost_at)]]
    assert [s.node for s in cache.share.slots] == ["wn1"], "its CPUs are not offered on the form"
    slots[1]["LastHeardFrom"] = int(time.time())
    run(cache.get("1"))
    assert cache.avoided_nodes() == [] and [s.node for s in cache.share.slots] == ["wn1", "wn2"]
    cache.node_lost("wn1", when=time.time() - 601)
    assert cache.avoided_nodes() == [], "forgotten after avoid_for"


def test_only_the_newest_lost_nodes_with_usable_names_are_sent():
    cache = JobStatusCache(lambda: [])
    for n in range(40):
        cache.node_lost(f"wn{n:02d}", when=1_000_000_000 + n)
    cache.node_lost('wn" || true', when=2_000_000_000)
    cache.avoid_for = 10**10
    avoided = cache.avoided_nodes()
    assert len(avoided) == 32 and avoided[0] == ["wn08", 1_000_000_008] and avoided[-1][0] == "wn39"
