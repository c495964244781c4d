/*
 * The Java half of sand-worker-java (not part of the grain API): loads the grain class once,
 * runs one handle() call per event on the calling instance thread and turns its result or its
 * exception into plain bytes for the C side, and routes System.out / System.err of instance
 * threads to the app's log (kinds stdout / stderr) of the instance that wrote them.
 */
package sand;

import java.io.ByteArrayOutputStream;
import java.io.OutputStream;
import java.io.PrintStream;
import java.io.PrintWriter;
import java.io.StringWriter;
import java.nio.charset.StandardCharsets;

final class Invoker {
    /* the context of the handler running on this thread, if any */
    private static final ThreadLocal<Context> CURRENT = new ThreadLocal<>();

    private Invoker() {}

    /** Loads and instantiates the grain class; called once, on the worker's main thread. */
    static Grain load(String className) throws Exception {
        Class<?> c = Class.forName(className, true, ClassLoader.getSystemClassLoader());
        if (!Grain.class.isAssignableFrom(c))
            throw new ClassCastException(className + " does not implement sand.Grain");
        Grain g = (Grain) c.getDeclaredConstructor().newInstance();
        System.setOut(new PrintStream(new InstanceStream(Context.KIND_STDOUT, System.out), true,
                                      StandardCharsets.UTF_8));
        System.setErr(new PrintStream(new InstanceStream(Context.KIND_STDERR, System.err), true,
                                      StandardCharsets.UTF_8));
        return g;
    }

    /**
     * Runs one event. Returns {output} (UTF-8 JSON text) on success, or {class name, message,
     * stack trace} when handle() threw.
     */
    static byte[][] run(Grain g, byte[] event, long ctxPtr) {
        Thread.interrupted(); /* an interrupt that reached this thread after its last event */
        Context ctx = new Context(ctxPtr);
        CURRENT.set(ctx);
        try {
            String out = g.handle(new String(event, StandardCharsets.UTF_8), ctx);
            return new byte[][] {(out == null ? "null" : out).getBytes(StandardCharsets.UTF_8)};
        } catch (Throwable t) {
            return describe(t);
        } finally {
            System.out.flush();
            System.err.flush();
            InstanceStream.endOfInstance();
            ctx.close();
            CURRENT.remove();
        }
    }

    /** {class name, message, stack trace} of t, UTF-8. */
    static byte[][] describe(Throwable t) {
        StringWriter sw = new StringWriter();
        t.printStackTrace(new PrintWriter(sw));
        String msg = t.getMessage();
        return new byte[][] {t.getClass().getName().getBytes(StandardCharsets.UTF_8),
                             (msg == null ? "" : msg).getBytes(StandardCharsets.UTF_8),
                             sw.toString().getBytes(StandardCharsets.UTF_8)};
    }

    /* System.out / System.err: lines written by an instance thread go to its instance's log;
     * anything else (JVM threads, the worker itself) to the worker's own stream. */
    private static final class InstanceStream extends OutputStream {
        private static final ThreadLocal<ByteArrayOutputStream[]> LINES =
            ThreadLocal.withInitial(() -> new ByteArrayOutputStream[2]);
        private static final int LINE_MAX = 16 * 1024;
        private final int kind;
        private final PrintStream orig;

        InstanceStream(int kind, PrintStream orig) {
            this.kind = kind;
            this.orig = orig;
        }

        private ByteArrayOutputStream line() {
            ByteArrayOutputStream[] l = LINES.get();
            int i = kind == Context.KIND_STDOUT ? 0 : 1;
            if (l[i] == null)
                l[i] = new ByteArrayOutputStream();
            return l[i];
        }

        @Override
        public void write(int b) {
            write(new byte[] {(byte) b}, 0, 1);
        }

        @Override
        public void write(byte[] b, int off, int len) {
            Context ctx = CURRENT.get();
            if (ctx == null) {
                orig.write(b, off, len);
                return;
            }
            ByteArrayOutputStream line = line();
            for (int i = off; i < off + len; i++) {
                if (b[i] == '\n') {
                    ctx.stdLine(kind, line.toByteArray());
                    line.reset();
                } else if (line.size() < LINE_MAX) {
                    line.write(b[i]);
                }
            }
        }

        @Override
        public void flush() {
            if (CURRENT.get() == null)
                orig.flush();
        }

        /* the last unterminated line of each stream of this thread */
        static void endOfInstance() {
            Context ctx = CURRENT.get();
            ByteArrayOutputStream[] l = LINES.get();
            for (int i = 0; i < 2; i++) {
                if (l[i] != null && l[i].size() > 0) {
                    if (ctx != null)
                        ctx.stdLine(i == 0 ? Context.KIND_STDOUT : Context.KIND_STDERR, l[i].toByteArray());
                    l[i].reset();
                }
            }
        }
    }
}
