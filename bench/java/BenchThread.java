/* Java's counterpart of a fork()ed instance in a warm worker: one thread per event, as the
 * Java grain runtime does. Prints N samples (microseconds from Thread.start to join, the thread
 * formatting a small JSON reply), after 200 unrecorded warm-up runs. */
public final class BenchThread {
    static volatile String sink;

    public static void main(String[] args) throws Exception {
        int n = args.length > 0 ? Integer.parseInt(args[0]) : 1000;
        StringBuilder out = new StringBuilder();
        for (int i = 0; i < n + 200; i++) {
            long t0 = System.nanoTime();
            Thread t = new Thread(() -> sink = "{\"tid\":" + Thread.currentThread().getId() + ",\"ok\":true}");
            t.start();
            t.join();
            long us = (System.nanoTime() - t0) / 1000;
            if (i >= 200)
                out.append(us).append('\n');
        }
        System.out.print(out);
    }
}
