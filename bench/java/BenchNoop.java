/* The smallest Java "handler" process: prints a one-line JSON result and exits; bench/startup
 * times a JVM start with it (java -cp DIR BenchNoop). */
public final class BenchNoop {
    public static void main(String[] args) {
        System.out.println("{\"ok\":true}");
    }
}
