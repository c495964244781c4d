"""Echoes its event."""


def handle(event, context):
    return event
