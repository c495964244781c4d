/* One-way latency of a Redis stream (XADD -> XREADGROUP BLOCK) from Java, speaking RESP by hand
 * over the server's unix socket (java.nio, no client library): the producer (main thread) and
 * the consumer (its own thread and connection) work like sand-bench-bus. Usage:
 * java -cp DIR BenchBus SOCKET N [SIZE]; prints one sample per line in microseconds. */
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.net.UnixDomainSocketAddress;
import java.nio.ByteBuffer;
import java.nio.channels.SocketChannel;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.SynchronousQueue;

public final class BenchBus {
    static final int WARMUP = 200;

    /* A minimal RESP connection: commands as arrays of bulk strings, replies parsed to
     * String / Long / List / null. */
    static final class Resp {
        final SocketChannel ch;
        final ByteBuffer in = ByteBuffer.allocate(1 << 16);

        Resp(String path) throws IOException {
            ch = SocketChannel.open(UnixDomainSocketAddress.of(path));
            in.flip();
        }

        Object call(String... args) throws IOException {
            ByteArrayOutputStream b = new ByteArrayOutputStream();
            b.writeBytes(("*" + args.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
            for (String a : args) {
                byte[] v = a.getBytes(StandardCharsets.UTF_8);
                b.writeBytes(("$" + v.length + "\r\n").getBytes(StandardCharsets.US_ASCII));
                b.writeBytes(v);
                b.writeBytes("\r\n".getBytes(StandardCharsets.US_ASCII));
            }
            ByteBuffer out = ByteBuffer.wrap(b.toByteArray());
            while (out.hasRemaining())
                ch.write(out);
            return read();
        }

        int byteAt() throws IOException {
            if (!in.hasRemaining()) {
                in.clear();
                if (ch.read(in) < 0)
                    throw new IOException("redis closed the connection");
                in.flip();
            }
            return in.get() & 0xff;
        }

        String line() throws IOException {
            StringBuilder s = new StringBuilder();
            for (int c = byteAt(); c != '\r'; c = byteAt())
                s.append((char) c);
            byteAt();
            return s.toString();
        }

        Object read() throws IOException {
            int type = byteAt();
            String l = line();
            switch (type) {
            case '+':
                return l;
            case '-':
                throw new IOException("redis: " + l);
            case ':':
                return Long.parseLong(l);
            case '$': {
                int len = Integer.parseInt(l);
                if (len < 0)
                    return null;
                byte[] v = new byte[len];
                for (int i = 0; i < len; i++)
                    v[i] = (byte) byteAt();
                byteAt();
                byteAt();
                return new String(v, StandardCharsets.UTF_8);
            }
            case '*': {
                int n = Integer.parseInt(l);
                if (n < 0)
                    return null;
                List<Object> list = new ArrayList<>(n);
                for (int i = 0; i < n; i++)
                    list.add(read());
                return list;
            }
            default:
                throw new IOException("bad RESP type " + (char) type);
            }
        }
    }

    @SuppressWarnings("unchecked")
    public static void main(String[] args) throws Exception {
        String path = args[0];
        int n = Integer.parseInt(args[1]);
        int size = args.length > 2 ? Integer.parseInt(args[2]) : 100;
        Resp prod = new Resp(path);
        prod.call("DEL", "benchj");
        prod.call("XGROUP", "CREATE", "benchj", "g", "$", "MKSTREAM");
        SynchronousQueue<Boolean> ack = new SynchronousQueue<>();
        long[] lat = new long[n];
        Thread consumer = new Thread(() -> {
            try {
                Resp c = new Resp(path);
                for (int i = 0; i < n + WARMUP; i++) {
                    List<Object> r = (List<Object>) c.call("XREADGROUP", "GROUP", "g", "c", "COUNT", "1",
                            "BLOCK", "0", "STREAMS", "benchj", ">");
                    List<Object> entries = (List<Object>) ((List<Object>) r.get(0)).get(1);
                    List<Object> entry = (List<Object>) entries.get(0);
                    List<Object> kv = (List<Object>) entry.get(1);
                    String d = (String) kv.get(1);
                    long t = Long.parseLong(d.substring(0, d.indexOf(' ')));
                    long now = System.nanoTime();
                    if (i >= WARMUP)
                        lat[i - WARMUP] = now - t;
                    c.call("XACK", "benchj", "g", (String) entry.get(0));
                    ack.put(Boolean.TRUE);
                }
            } catch (Exception e) {
                e.printStackTrace();
                System.exit(1);
            }
        });
        consumer.start();
        String pad = "x".repeat(Math.max(0, size - 21));
        for (int i = 0; i < n + WARMUP; i++) {
            Thread.sleep(0, 200000);
            long t = System.nanoTime();
            prod.call("XADD", "benchj", "MAXLEN", "~", "1000", "*", "d", t + " " + pad);
            ack.take();
        }
        consumer.join();
        prod.call("DEL", "benchj");
        StringBuilder out = new StringBuilder();
        for (long v : lat)
            out.append(String.format("%.1f%n", v / 1000.0));
        System.out.print(out);
    }
}
