def run(event, context):
    return {"c": event, "step": context.step}
