/*
 * The Java grain of tests/unit/test_worker_java.c: one class whose behaviour is chosen by the
 * event's "op" (ids, echo, raise, sleep, spin, conc, dl, print, nojson, null, next), each
 * exercising one rule of the Java runtime.
 */
package wt;

import java.util.Arrays;
import java.util.concurrent.atomic.AtomicInteger;
import sand.Context;
import sand.Grain;

public final class JGrain implements Grain {
    /* handlers running right now in this JVM, and the most ever seen at once */
    private static final AtomicInteger RUNNING = new AtomicInteger();
    private static final AtomicInteger MAX = new AtomicInteger();

    private static boolean is(String ev, String op) {
        return ev.contains("\"op\":\"" + op + "\"");
    }

    private static String q(String s) {
        return "\"" + s.replace("\\", "\\\\").replace("\"", "\\\"") + "\"";
    }

    @Override
    public String handle(String ev, Context ctx) throws Exception {
        if (is(ev, "ids"))
            return "{\"app\":" + q(ctx.app()) + ",\"grain\":" + q(ctx.grain()) + ",\"step\":"
                + q(ctx.step()) + ",\"wf\":" + q(ctx.workflow()) + ",\"x\":" + q(ctx.executionId())
                + ",\"attempt\":" + ctx.attempt() + ",\"left\":" + (ctx.remainingMs() > 0) + "}";
        if (is(ev, "raise"))
            throw new IllegalStateException("bad thing in " + ctx.step());
        if (is(ev, "sleep")) {
            Thread.sleep(30000);
            return "\"woke up\"";
        }
        if (is(ev, "spin")) {
            long n = 0;
            while (n >= 0) /* ignores interrupts */
                n = (n + 1) % 1000000;
            return "\"unreachable\"";
        }
        if (is(ev, "conc")) {
            int now = RUNNING.incrementAndGet();
            MAX.accumulateAndGet(now, Math::max);
            try {
                Thread.sleep(150);
            } finally {
                RUNNING.decrementAndGet();
            }
            return "{\"max\":" + MAX.get() + "}";
        }
        if (is(ev, "dl"))
            return dataLayer(ctx);
        if (is(ev, "print")) {
            System.out.println("printed " + ctx.executionId());
            System.err.println("to stderr");
            ctx.log("jlog %d in %s", 7, ctx.step());
            return "true";
        }
        if (is(ev, "nojson"))
            return "not json";
        if (is(ev, "null"))
            return null;
        if (is(ev, "next")) {
            ctx.next("j3", "{\"via\":" + q(ctx.step()) + "}");
            return "{}";
        }
        return "{\"j\":" + ev + ",\"step\":" + q(ctx.step()) + "}";
    }

    private static String dataLayer(Context ctx) {
        StringBuilder out = new StringBuilder("{");
        int[] sizes = {0, 1, 1024 * 1024};
        for (String scope : new String[] {Context.LOCAL, Context.GLOBAL}) {
            for (int size : sizes) {
                byte[] v = new byte[size];
                for (int i = 0; i < size; i++)
                    v[i] = (byte) (i * 31 + 7);
                String key = "jdl-" + scope + "-" + size;
                ctx.put(key, v, scope);
                byte[] back = ctx.get(key, scope);
                ctx.delete(key, scope);
                boolean gone = ctx.get(key, scope) == null;
                out.append(q(key)).append(':').append(back != null && Arrays.equals(v, back) && gone)
                    .append(',');
            }
        }
        ctx.put("jkeep", new byte[] {0, 1, (byte) 0xff});
        ctx.put("jtext", "h\u00e9");
        boolean text = "h\u00e9".equals(ctx.getString("jtext", Context.LOCAL));
        String big = "none";
        try {
            ctx.put("jbig", new byte[3 * 1024 * 1024]);
        } catch (IllegalArgumentException e) {
            big = e.getClass().getSimpleName();
        }
        String badScope = "none";
        try {
            ctx.get("x", "nowhere");
        } catch (IllegalArgumentException e) {
            badScope = "rejected";
        }
        return out.append("\"text\":").append(text).append(",\"big\":").append(q(big))
            .append(",\"scope\":").append(q(badScope)).append(",\"absent\":")
            .append(ctx.get("never-stored") == null).append('}').toString();
    }
}
