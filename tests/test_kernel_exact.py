"""The kernel-handler engine returns every request exactly once with every producer at once.

The race this catches: the dispatcher's last release made a request's in-flight count zero,
and *then* it read the slot's state to decide whether the handler had left it stalled. In
between, a run() caller could collect the request, free the slot and start the slot's next
request: the dispatcher then finished that new request as stalled (HandlerResult -4096,
followed by an `after_finish` event for its start NOP). Two request slots and many run()
threads make slot reuse constant; the old dispatcher failed about one request in 200,000
this way (`python -m sakura_uring.bench exact` runs the 10-million-request version)."""
import pytest

from sakura_uring.bench import exact

from helpers import require_kernel_engine

pytestmark = pytest.mark.needs("kernel")


@pytest.mark.parametrize("buffers,runners,callers", [(2, 6, 1), (16, 4, 2)])
def test_every_request_exactly_once_with_every_producer(buffers, runners, callers):
    require_kernel_engine()
    r = exact.run(600_000, entries=256, buffers=buffers, cq_entries=256, runners=runners,
                  callers=callers, seconds=25)
    assert r["returned"] >= 20_000, r           # bounded in time, not starved
    assert (r["wrong"], r["lost"], r["stalled"], r["after_finish"]) == (0, 0, 0, 0), r


def test_map_never_blocks_the_drainer():
    """map() starts its next request from the drainer thread; with every slot taken by
    call() requests (which only the drainer reports), waiting there for a slot would
    deadlock, so the drainer hands such starts back to map()'s own thread."""
    require_kernel_engine()
    r = exact.run(30_000, entries=256, buffers=4, runners=0, callers=3, seconds=60)
    assert r["lost"] == 0 and r["wrong"] == 0 and r["returned"] == 30_000, r
