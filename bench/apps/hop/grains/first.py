"""First step of the hop benchmark: echoes its event."""


def handle(event, context):
    return event
