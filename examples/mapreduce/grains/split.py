# Splits the text into three chunks of whole words, stores each in the local data layer under a
# key of this execution, and passes on only the keys (the paper's "pass references, not data").
TEXT = ("the quick brown fox jumps over the lazy dog "
        "the dog sleeps and the fox runs "
        "a quick fox and a lazy dog")
MAPPERS = 3


def handle(event, context):
    words = str(event.get("text", TEXT) if isinstance(event, dict) else TEXT).split()
    keys = []
    for i in range(MAPPERS):
        chunk = words[i * len(words) // MAPPERS:(i + 1) * len(words) // MAPPERS]
        key = "chunk:%s:%d" % (context.execution_id, i)
        context.put(key, " ".join(chunk))
        keys.append(key)
    context.log("split %d words into %d chunks", len(words), MAPPERS)
    return {"chunks": keys}
