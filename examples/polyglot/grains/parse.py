# Step 1 (Python): counts the words of event["text"] and starts the path.
def handle(event, context):
    text = str(event.get("text", ""))
    context.log("parse: %d characters", len(text))
    return {"text": text, "words": len(text.split()), "path": ["python"]}
