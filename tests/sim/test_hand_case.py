"""One case small enough to follow by hand, checked to the nanosecond (see conftest)."""

from comet_dse.sim import Comet, Sequential, simulate


def ns(us: float) -> int:
    """Results are in µs with 3 decimals; every time here is a whole number of ns."""
    return round(us * 1e3)


def test_sequential_by_hand(hand_case):
    workload, hw = hand_case
    r = simulate(workload, hw, Sequential())
    # permute 1 ns (262144 B at 262144 B/ns) -> host sync 1000 -> dispatch 65536 B / 64 B/ns + 1000
    # -> GEMM0 4 tiles on 4 SMs 1000 -> GEMM1 500 -> combine 2024 -> reduce 1
    assert ns(r.layer0_us) == 1 + 1000 + 2024 + 1000
    assert ns(r.latency_us) == 1 + 1000 + 2024 + 1000 + 500 + 2024 + 1
    assert ns(r.compute_alone_us) == 1500
    assert ns(r.comm_alone_us) == 2 * 2024
    assert r.overheads_us == {"permute": 0.001, "host_sync": 1.0, "reduce": 0.001, "launch": 0.0}
    assert ns(r.exposed_comm_us) == 2 * 2024


def test_comet_by_hand(hand_case):
    workload, hw = hand_case
    r = simulate(workload, hw, Comet(comm_blocks0=2, comm_blocks1=2, n_splits=2))
    # layer0: 2 comm blocks = 32 B/ns shared by the local copy and the NVLink pull (16 each):
    # both 65536 B flows end at 4096; local tile ready 4096, remote tile 4096 + 1000 latency.
    # 2 compute blocks: local tile's 2 column tiles 4096-5096, remote tile's 5096-6096.
    assert ns(r.layer0_us) == 6096
    # layer1: remote rows first; split 0 of both tiles 6096-6596, split 1 6596-7096.
    # split 0 sends (32768 B to each rank, 16 B/ns each) 6596-8644; split 1 8644-10692;
    # the peer's last rows land 1000 later; reduce 1 ns.
    assert ns(r.latency_us) == 10692 + 1000 + 1
    assert ns(r.compute_alone_us) == 2000 + 1000
    # communication alone, as for every schedule: the peer's 65536 B each way at the link's 64 B/ns
    # + 1000 latency, twice (dispatch, combine); the comm blocks' own limit is comet's to hide or not
    assert ns(r.comm_alone_us) == 2 * 2024
    assert r.overheads_us == {"reduce": 0.001, "launch": 0.0}


def test_every_schedule_has_the_same_communication_alone(hand_case):
    from comet_dse.sim import Chunked

    workload, hw = hand_case
    results = [simulate(workload, hw, s) for s in (Sequential(), Chunked(chunks=2), Comet(comm_blocks0=2, comm_blocks1=2,
                                                                                          n_splits=2))]
    assert {ns(r.comm_alone_us) for r in results} == {2 * 2024}
    # compute alone 1500-3000 ns < 4048: communication-bound whatever the schedule
    assert all(r.comm_bound for r in results)
    seq, comet = results[0], results[2]
    assert seq.hidden_comm_fraction == 0.0  # one step after another: nothing hidden
    # comet: exposed 11693 - 3000 - 1 = 8692 > the 4048 - 3000 that no overlap can hide: 0 of the hideable
    assert comet.hidden_comm_fraction == 0.0 and ns(comet.exposed_comm_us) == 8692
