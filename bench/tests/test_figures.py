"""The benchmark's own arithmetic: Redis traffic counts, targets, the summary, the load run's databases."""

import threading

import pytest
import redis

from bench.__main__ import cluster_costs, request_path_traffic, select_scenarios, summary_figures
from bench.harness import BenchError, PathRotation, count_redis_traffic
from bench.load import mix_errors, mix_targets, postgres_maintenance_url, private_database_url
from bench.scenarios import TRAFFIC_SLACK, Target
from devstack.redis_cluster import LocalCluster


def test_a_count_tells_commands_sent_from_those_a_script_runs_and_counts_round_trips(redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=14)
    app = redis.Redis(host=redis_server.host, port=redis_server.port, db=14)
    app.ping()  # connected before the count, as a warm server's pools are

    def send() -> None:
        for _ in range(2):
            app.get("bench:test")  # 1 command, 1 round trip
            pipe = app.pipeline(transaction=False)
            pipe.incr("bench:test:n")
            pipe.sadd("bench:test:s", "a")
            pipe.execute()  # 2 commands, 1 round trip
            app.eval("redis.call('GET', KEYS[1]); return redis.call('TIME')", 1, "bench:test")  # 1 sent, 2 run

    try:
        traffic = count_redis_traffic(client, 2, send)
    finally:
        app.delete("bench:test:n", "bench:test:s")
        app.close()
        client.close()
    assert traffic.by_command == {"eval": 1.0, "get": 1.0, "incrby": 1.0, "sadd": 1.0}
    assert traffic.commands == 4.0
    assert traffic.script_commands == 2.0
    assert traffic.reads == 3.0


def test_a_count_includes_what_the_requests_left_to_a_background_flush(redis_server):
    client = redis.Redis(host=redis_server.host, port=redis_server.port, db=14)
    app = redis.Redis(host=redis_server.host, port=redis_server.port, db=14)
    app.ping()
    flusher = threading.Timer(0.2, lambda: app.incrby("bench:test:n", 4))

    def send() -> None:
        for _ in range(4):
            app.get("bench:test")
        flusher.start()  # lands after the last request, as a view buffer's flush does

    try:
        traffic = count_redis_traffic(client, 4, send)
    finally:
        flusher.join()
        app.delete("bench:test:n")
        app.close()
        client.close()
    assert traffic.by_command == {"get": 1.0, "incrby": 0.25}
    assert traffic.reads == 1.25


def test_a_count_over_a_clusters_nodes_sums_them_and_a_pipeline_round_trips_once_per_primary():
    with LocalCluster(3, extra_config={"appendonly": "no"}) as cluster:
        nodes = [redis.Redis(host=host, port=port) for host, port in cluster.seed_nodes]
        app = redis.RedisCluster(host=cluster.host, port=cluster.seed_nodes[0][1])
        # One key on each primary.
        names = [
            next(f"bench:test:{n}" for n in range(100) if app.keyslot(f"bench:test:{n}") in slots)
            for slots in (cluster.slots_of(primary) for primary in cluster.primaries())
        ]

        def send(requests: int = 2) -> None:
            for _ in range(requests):
                app.get(names[0])  # 1 command, 1 round trip
                pipe = app.pipeline()
                for name in names:
                    pipe.set(name, 1)
                pipe.execute()  # 3 commands, 1 round trip to each primary

        try:
            send(1)  # every primary's connection made before the count, as a warm server's pools are
            traffic = count_redis_traffic(nodes, 2, send)
        finally:
            app.close()
            for node in nodes:
                node.close()
    assert traffic.by_command == {"get": 1.0, "set": 3.0}
    assert traffic.reads == 4.0


def test_the_clusters_cost_is_each_paths_figures_over_its_own_on_one_server():
    def measured(name: str, rps: float, floor_ratio: float, reads: float) -> dict:
        return {
            "name": name,
            "settings": "default",
            "rps": rps,
            "p99_ms": 10.0,
            "errors": 0,
            "bad_status": 0,
            "redis": {"reads": reads, "commands": reads},
            "summary": {"floor_ratio": floor_ratio},
        }

    one = [
        measured("drf-floor", 2000, 1.0, 0.0),
        measured("post-redis", 1000, 0.5, 1.0),
        measured("feed", 500, 0.25, 2),
    ]
    cluster = [measured("drf-floor", 2200, 1.0, 0.0), measured("post-redis", 880, 0.4, 1.0)]
    costs = cluster_costs(one, cluster, {"feed": "GET /api/feed answered 500"})

    floor, read = costs["rows"]
    assert [row["name"] for row in costs["rows"]] == ["drf-floor", "post-redis"]  # feed: not measured there
    assert floor["rps_ratio"] == pytest.approx(1.1)  # the machine's drift between the stacks
    assert floor["round_trips_ratio"] is None  # no Redis on either
    assert read["rps_ratio"] == pytest.approx(0.88)
    assert read["floor_ratios_ratio"] == pytest.approx(0.8)  # the drift divided out
    assert read["added_us_per_request"] == pytest.approx(1e6 / 880 - 1e6 / 1000)
    assert read["round_trips_ratio"] == pytest.approx(1.0)
    assert costs["unmeasured"] == {"feed": "GET /api/feed answered 500"}


def test_a_traffic_target_allows_the_slack_for_what_is_not_per_request_and_no_more():
    target = Target("round_trips", "<=", 1)
    assert target.met(1 + TRAFFIC_SLACK)
    assert not target.met(1 + TRAFFIC_SLACK + 0.01)
    assert Target("commands", "<=", 0).met(0.03)


def test_a_ratio_target_has_no_slack_and_an_unmeasured_figure_is_neither_met_nor_missed():
    target = Target("floor_ratio", ">=", 0.95)
    assert target.met(0.95)
    assert not target.met(0.949)
    assert target.met(None) is None
    assert target.label == ">= 0.95x the floor's req/s"


def test_views_flushed_in_the_background_are_left_out_of_the_request_path_but_inline_ones_are_not():
    redis_info = {"reads": 1.03, "commands": 1.09}
    background = {"state_round_trips": 0.02, "state_commands": 0.06}
    figures = request_path_traffic(redis_info, background)
    assert figures["round_trips"] == pytest.approx(1.01)
    assert figures["commands"] == pytest.approx(1.03)
    assert figures["background_round_trips"] == 0.02

    inline = {"state_round_trips": 1.0, "state_commands": 3.0}
    figures = request_path_traffic({"reads": 2.0, "commands": 4.0}, inline)
    assert (figures["round_trips"], figures["commands"], figures["background_round_trips"]) == (2.0, 4.0, 0.0)


def _result(name: str, rps: float, *, naive_compare: bool = False, targets: tuple[Target, ...] = ()) -> dict:
    return {
        "name": name,
        "rps": rps,
        "p50_ms": 1000 / rps,
        "p99_ms": 4000 / rps,
        "naive_compare": naive_compare,
        "targets": [{"measure": t.measure, "op": t.op, "bound": t.bound} for t in targets],
        "redis": {"reads": 0.0, "commands": 0.0},
        "redis_by_role": None,
    }


def test_the_summary_divides_a_post_read_by_the_floor_and_both_naive_reads():
    floor, naive, counted = _result("drf-floor", 1000), _result("naive", 500), _result("naive-counted", 400)
    read = _result("post-l1", 600, naive_compare=True, targets=(Target("naive_counted_ratio", ">=", 1.3),))
    figures = summary_figures(read, floor, naive, counted)
    assert figures["floor_ratio"] == pytest.approx(0.6)
    assert figures["naive_ratio"] == pytest.approx(1.2)
    assert figures["naive_counted_ratio"] == pytest.approx(1.5)
    assert figures["p99_ratio"] == pytest.approx(1000 / 600)
    assert [t["met"] for t in figures["targets"]] == [True]
    # Paths other than a read of a post are not divided by the naive reads.
    assert summary_figures(_result("feed", 300), floor, naive, counted)["naive_ratio"] is None


def test_a_read_of_a_post_runs_with_the_floor_and_both_naive_reads_and_other_groups_alone():
    assert [s.name for s in select_scenarios(["post-bearer"], ["http"])] == [
        "drf-floor",
        "naive",
        "naive-counted",
        "post-bearer",
    ]
    assert [s.name for s in select_scenarios(None, ["writes"])] == ["drf-floor", "create-post", "like"]
    assert select_scenarios(None, ["jobs"]) == []


def test_a_rotation_says_when_it_may_have_come_round_to_a_path_again():
    rotation = PathRotation([f"/p/{n}" for n in range(100)])
    rotation.take(10)
    rotation.advance(50, 16)  # 63 with the margin, plus the connections: 89 in all
    rotation.take(11)
    assert not rotation.wrapped
    rotation.take(1)
    assert rotation.wrapped


def test_the_load_run_makes_its_database_beside_the_one_database_url_names():
    url = "postgres://postgres@127.0.0.1:5432/kestrel_bench?sslmode=disable"
    assert postgres_maintenance_url(url) == "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable"
    assert private_database_url(url, "kestrel_bench_load_1") == (
        "postgres://postgres@127.0.0.1:5432/kestrel_bench_load_1?sslmode=disable"
    )
    with pytest.raises(BenchError, match="PostgreSQL"):
        postgres_maintenance_url("sqlite:///var/kestrel.sqlite3")


def test_every_answer_outside_2xx_and_3xx_is_a_load_error():
    mix = {
        "errors": 2,
        "statuses": {"200": 900, "201": 50, "409": 3, "429": 1, "502": 1},
        "ratio_rps": 0.5,
        "ratio_p99": 2.0,
    }
    assert mix_errors(mix) == 7
    targets = {t["figure"]: t["met"] for t in mix_targets(mix)}
    assert targets == {"ratio_rps": True, "ratio_p99": True, "errors": False}


def test_a_view_send_is_named_apart_from_other_scripts():
    from bench.harness import VIEW_SEND, command_name
    from core.keys import key
    from posts import keys as post_keys

    # MONITOR lines as the server prints them, with the keys Kestrel's builders make.
    batch_key = post_keys.view_batches("9f3c", post_keys.view_shard(1))
    view_send = f'EVALSHA "ab12" "3" "{batch_key}" "{post_keys.post_views(1)}"'
    assert command_name(view_send) == VIEW_SEND
    assert command_name(f'EVALSHA "ab12" "1" "{key("core", "ratelimit", "0a1b", "api")}"') == "evalsha"
    assert command_name(f'GET "{post_keys.post_detail(1)}"') == "get"
