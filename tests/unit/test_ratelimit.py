from domain.ratelimit import TokenBucket, retry_after_header


def test_burst_then_refill():
    bucket = TokenBucket(rate=2, burst=3)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    wait = bucket.take(0.0)
    assert 0.49 < wait <= 0.5
    assert bucket.take(0.5) == 0.0
    assert bucket.take(0.5) > 0


def test_never_saves_more_than_burst():
    bucket = TokenBucket(rate=10, burst=2)
    bucket.take(0.0)
    assert [bucket.take(100.0) for _ in range(3)][:2] == [0.0, 0.0]
    assert bucket.take(100.0) > 0


def test_retry_after_is_whole_seconds_at_least_one():
    assert retry_after_header(0.01) == "1"
    assert retry_after_header(1.2) == "2"
