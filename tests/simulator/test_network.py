"""Network: latency + bandwidth, links shared max-min fairly, never over capacity."""
from __future__ import annotations

import numpy as np
import pytest

from simulator.engine.core import Environment
from simulator.pipelines.network import LinkSpec, Network, Place, Topology


def test_lone_transfer_pays_latency_plus_bytes_over_bandwidth():
    """One transfer on an idle link takes latency + bytes / bandwidth."""
    env = Environment()
    net = Network(env)
    lk = net.link("a", bw=1e9, latency=1e-3)
    out = []
    net.transfer([lk], 5e8, 0.0, out.append)
    env.run()
    assert out == [pytest.approx(1e-3 + 0.5)]


def test_concurrent_transfers_share_the_link():
    """Two equal transfers started together each get half the bandwidth; a third started
    later slows the others down; total rate never exceeds the link."""
    env = Environment()
    net = Network(env)
    lk = net.link("a", bw=100.0)
    done = {}
    net.transfer([lk], 100.0, 0.0, lambda t: done.setdefault("x", t))
    net.transfer([lk], 100.0, 0.0, lambda t: done.setdefault("y", t))
    net.transfer([lk], 50.0, 1.0, lambda t: done.setdefault("z", t))
    env.run()
    # 0-1 s: 2 flows at 50 B/s -> 50 B left each; then 3 flows at 33.3 B/s: all 50 B left -> 1.5 s
    assert done["x"] == pytest.approx(2.5) and done["y"] == pytest.approx(2.5)
    assert done["z"] == pytest.approx(2.5)
    assert lk.peak_rate <= lk.bw * (1 + 1e-9)
    assert lk.carried == pytest.approx(250.0)


def test_max_min_fair_share_across_two_links():
    """A flow bottlenecked elsewhere leaves the rest of a shared link to the other flow."""
    env = Environment()
    net = Network(env)
    slow, fast = net.link("slow", 10.0), net.link("fast", 100.0)
    done = {}
    net.transfer([slow, fast], 10.0, 0.0, lambda t: done.setdefault("ab", t))   # capped at 10 B/s
    net.transfer([fast], 90.0, 0.0, lambda t: done.setdefault("b", t))         # gets the other 90
    env.run()
    assert done["ab"] == pytest.approx(1.0)
    assert done["b"] == pytest.approx(1.0)
    assert fast.peak_rate == pytest.approx(100.0)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_transfers_never_exceed_any_link(seed):
    """Random transfers over a 2-rack topology: every link's assigned rate stays within its
    bandwidth, every byte arrives, and nothing finishes faster than alone on its path."""
    rng = np.random.default_rng(seed)
    env = Environment()
    net = Network(env)
    topo = Topology(net, {"device": LinkSpec(400.0, 0.001), "node": LinkSpec(50.0, 0.002),
                          "rack": LinkSpec(80.0, 0.005)})
    places = [Place(r, n, d) for r in range(2) for n in range(2) for d in range(2)]
    total, out = 0.0, []
    for i in range(60):
        a, b = rng.choice(len(places), 2, replace=False)
        nbytes, t0 = float(rng.uniform(1, 200)), float(rng.uniform(0, 5))
        total += nbytes
        ideal = topo.ideal_s(places[a], places[b], nbytes)
        env.schedule(t0, topo.send, places[a], places[b], nbytes, t0,
                     lambda t, s=t0, ideal=ideal: out.append((t - s, ideal)))
    env.run()
    assert len(out) == 60
    assert all(took >= ideal * (1 - 1e-9) for took, ideal in out)
    for lk in net.links.values():
        assert lk.peak_rate <= lk.bw * (1 + 1e-9), lk.name
    # every byte crosses 2 or 4 links; the node NICs see each inter-node byte twice
    assert sum(lk.carried for lk in net.links.values()) >= 2 * total * (1 - 1e-9)


def test_topology_paths_by_level():
    """Same device: no links; same node: two device links; other rack: NICs and rack uplinks."""
    topo = Topology(Network(Environment()), {"device": LinkSpec(1, 0), "node": LinkSpec(1, 0),
                                             "rack": LinkSpec(1, 0)})
    assert topo.path(Place(0, 0, 1), Place(0, 0, 1)) == []
    assert [lk.name for lk in topo.path(Place(0, 0, 0), Place(0, 0, 1))] == ["device:0/0/0", "device:0/0/1"]
    assert [lk.name for lk in topo.path(Place(0, 0, 0), Place(0, 1, 0))] == ["node:0/0", "node:0/1"]
    assert [lk.name for lk in topo.path(Place(0, 0, 0), Place(1, 0, 0))] == ["node:0/0", "rack:0", "rack:1", "node:1/0"]
    assert Place.parse("1/2") == Place(1, 2, 0)
    with pytest.raises(ValueError):
        Place.parse("a/b")
