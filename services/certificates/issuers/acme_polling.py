"""Polling an ACME order without the `acme` library's fixed one-second sleeps: start at 50 ms and
double up to a second, so a CA that validates at once (most do, for a ready HTTP-01 answer) is
not waited on. Runs in a worker thread, like the rest of the library."""

from __future__ import annotations

import datetime
import time

from acme import client, errors, messages

FIRST_DELAY_SECONDS = 0.05
LONGEST_DELAY_SECONDS = 1.0


def _pause(delay: float, deadline: datetime.datetime) -> float:
    if datetime.datetime.now() >= deadline:
        raise errors.TimeoutError()
    time.sleep(delay)
    return min(LONGEST_DELAY_SECONDS, delay * 2)


def poll_authorizations(
    acme: client.ClientV2, order: messages.OrderResource, deadline: datetime.datetime
) -> messages.OrderResource:
    settled = []
    for authorization in order.authorizations:
        delay = FIRST_DELAY_SECONDS
        authorization, _ = acme.poll(authorization)
        while authorization.body.status == messages.STATUS_PENDING:
            delay = _pause(delay, deadline)
            authorization, _ = acme.poll(authorization)
        settled.append(authorization)
    failed = [item for item in settled if item.body.status != messages.STATUS_VALID]
    if failed:
        raise errors.ValidationError(failed)
    authorized: messages.OrderResource = order.update(authorizations=settled)
    return authorized


def finalize(
    acme: client.ClientV2, order: messages.OrderResource, deadline: datetime.datetime
) -> messages.OrderResource:
    order = acme.begin_finalization(order)
    delay = FIRST_DELAY_SECONDS
    while True:
        body = order.body
        if body.status == messages.STATUS_VALID and body.certificate:
            chain = acme._post_as_get(body.certificate).text
            issued: messages.OrderResource = order.update(fullchain_pem=chain)
            return issued
        if body.status == messages.STATUS_INVALID:
            raise errors.IssuanceError(body.error) if body.error else errors.Error("the order was refused")
        delay = _pause(delay, deadline)
        response = acme._post_as_get(order.uri)
        order = order.update(body=messages.Order.from_json(response.json()))


def poll_and_finalize(
    acme: client.ClientV2, order: messages.OrderResource, deadline: datetime.datetime
) -> messages.OrderResource:
    return finalize(acme, poll_authorizations(acme, order, deadline), deadline)
