"""core.api's input serializers: the JSON types and query parameters /api/schema states, nothing coerced."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.http import QueryDict
from rest_framework import serializers

from core.api import BodySerializer, QuerySerializer


class Body(BodySerializer):
    title = serializers.CharField()
    count = serializers.IntegerField(required=False)
    public = serializers.BooleanField(required=False)


class Query(QuerySerializer):
    count = serializers.IntegerField(min_value=1, default=10)
    before = serializers.CharField(required=False)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"title": 5}, "title"),
        ({"title": ["a"]}, "title"),
        ({"title": "a", "count": "5"}, "count"),
        ({"title": "a", "count": 5.0}, "count"),
        ({"title": "a", "count": True}, "count"),
        ({"title": "a", "public": "true"}, "public"),
        ({"title": "a", "public": 1}, "public"),
    ],
)
def test_a_body_field_in_another_json_type_is_refused(data, field):
    body = Body(data=data)

    assert not body.is_valid()
    assert list(body.errors) == [field]


def test_a_body_in_the_stated_types_is_taken():
    body = Body(data={"title": "a", "count": 5, "public": False})

    assert body.is_valid(), body.errors
    assert body.validated_data == {"title": "a", "count": 5, "public": False}


def test_null_is_left_to_the_field():
    body = Body(data={"title": None})

    assert not body.is_valid()
    assert body.errors["title"] == ["This field may not be null."]


@pytest.mark.parametrize("query", ["count=5&count=6", "before=a&before=b"])
def test_a_query_parameter_given_twice_is_refused(query):
    params = Query(data=QueryDict(query))

    assert not params.is_valid()
    assert params.errors == {query.split("=")[0]: ["Give this parameter once."]}


@pytest.mark.parametrize("value", ["", " 5", "5 ", "5.0", "1_0", "\u0665", "+5", "0x5"])
def test_an_integer_query_parameter_is_ascii_digits(value):
    params = Query(data=QueryDict(urlencode({"count": value})))

    assert not params.is_valid()
    assert list(params.errors) == ["count"]


def test_an_empty_query_value_is_a_value_not_an_absence():
    params = Query(data=QueryDict("before="))

    assert not params.is_valid()
    assert list(params.errors) == ["before"]


def test_absent_parameters_take_their_defaults():
    params = Query(data=QueryDict(""))

    assert params.is_valid(), params.errors
    assert params.validated_data == {"count": 10}
