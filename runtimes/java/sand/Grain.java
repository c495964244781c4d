/*
 * The Java grain API (SPEC section 4): a grain is a public class with a public no-argument
 * constructor that implements this interface; app.yaml names it in `handler`. sand-worker-java
 * instantiates it once, when the worker starts, and calls handle() on one instance thread per
 * event, so handle() may run on several threads at once (up to the grain's concurrency) and
 * must not keep per-event state in fields.
 */
package sand;

/** A grain: turns one event (JSON text) into one output (JSON text). */
public interface Grain {
    /**
     * Handles one event.
     *
     * @param eventJson the event, one JSON value as text
     * @param ctx the instance's context; valid only until this call returns
     * @return the output, one JSON value as text ({@code null} counts as JSON null)
     * @throws Exception any exception fails the instance: its class name, message and stack
     *     trace become the error object
     */
    String handle(String eventJson, Context ctx) throws Exception;
}
