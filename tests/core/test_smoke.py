def test_redis_answers(state_redis):
    assert state_redis.ping()
