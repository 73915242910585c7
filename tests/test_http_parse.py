"""parse() keeps its answers for the heads it saw last (http.PARSED_KEPT): a kept answer is
exactly what parsing the head gives, whatever the head, and what is kept is bounded."""
from hypothesis import given, settings
from hypothesis import strategies as st

from sakura_uring.httpd import http
from sakura_uring.httpd.http import PARSED_KEPT, _parse, parse

from helpers import BAD_REQUESTS

GOOD = [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n",
        b"HEAD /x%20y HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
        b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n",
        b"POST /a HTTP/1.1\r\nHost: a\r\n\r\n"]


def _heads():
    out = list(GOOD)
    for raw, _status in BAD_REQUESTS:
        split = http.split_head(raw)
        out.append(split[0] if split else raw)
    return out


def test_kept_answers_are_the_parse_of_the_head_twice_over():
    for head in _heads():
        for body_max in (0, 10, http.BODY_MAX):
            first, again = parse(head, body_max), parse(head, body_max)
            assert first == again == _parse(head, body_max), head


def test_the_limit_is_part_of_what_is_kept():
    head = b"GET /a HTTP/1.1\r\nHost: a\r\nContent-Length: 12\r\n\r\n"
    assert parse(head, 100).status == 200 and parse(head, 100).body == 12
    assert parse(head, 10).status == 413                # not the answer kept for 100


@settings(max_examples=300, deadline=None)
@given(line=st.binary(max_size=60), headers=st.lists(st.binary(max_size=40), max_size=4))
def test_any_bytes_get_the_same_answer_kept_or_not(line, headers):
    head = line + b"\r\n" + b"".join(h + b"\r\n" for h in headers) + b"\r\n"
    assert parse(head) == parse(head) == _parse(head, http.BODY_MAX)


def test_what_is_kept_is_bounded():
    for i in range(PARSED_KEPT + 500):
        parse(b"GET /%d HTTP/1.1\r\nHost: a\r\n\r\n" % i)
    assert http._parse_kept.cache_info().currsize <= PARSED_KEPT
