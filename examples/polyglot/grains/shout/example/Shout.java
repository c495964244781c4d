/*
 * Step 2 (Java): upper-cases the text that parse produced and appends "java" to the path. The
 * event is parse's output, e.g. {"text": "hello sand", "words": 2, "path": ["python"]}; the
 * grain reads it with two regular expressions to stay free of any JSON library.
 */
package example;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import sand.Context;
import sand.Grain;

public final class Shout implements Grain {
    private static final Pattern TEXT = Pattern.compile("\"text\":\\s*\"((?:[^\"\\\\]|\\\\.)*)\"");
    private static final Pattern WORDS = Pattern.compile("\"words\":\\s*(\\d+)");

    @Override
    public String handle(String event, Context ctx) throws Exception {
        Matcher t = TEXT.matcher(event), w = WORDS.matcher(event);
        if (!t.find() || !w.find())
            throw new IllegalArgumentException("expected {\"text\": ..., \"words\": N}, got " + event);
        String text = t.group(1).toUpperCase(Locale.ROOT);
        ctx.log("shout: %s words in %s", w.group(1), ctx.executionId());
        return "{\"text\":\"" + text + "\",\"words\":" + w.group(1) + ",\"path\":[\"python\",\"java\"]}";
    }
}
