/*
 * The context of one grain instance (SPEC section 4), the Java mirror of the Python context:
 * identity of the instance, the data layer (put/get/delete of binary values in the local or the
 * global scope), log lines and dynamic routing. Every method calls the worker's C functions of
 * include/sand/grain.h through JNI on the calling thread; a Context belongs to one handle()
 * call and any use after it returned throws IllegalStateException.
 */
package sand;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;

/** What a handler can ask of the platform while it runs. */
public final class Context {
    /** The host's data layer (the default scope). */
    public static final String LOCAL = "local";
    /** The global data layer, shared by every host. */
    public static final String GLOBAL = "global";

    /* return codes of include/sand/grain.h */
    private static final int EINVAL = -1, ENOMEM = -2, ETOOBIG = -3, ENOTFOUND = -4;
    /* log kinds understood by nLog */
    static final int KIND_LOG = 0, KIND_STDOUT = 1, KIND_STDERR = 2, KIND_SYSTEM = 3;
    /* stdout + stderr kept per instance, as for the other runtimes */
    static final long STD_BYTES_MAX = 1024 * 1024;

    private final long ptr;
    private volatile boolean closed;
    long stdLogged;
    boolean stdTruncated;

    Context(long ptr) {
        this.ptr = ptr;
    }

    void close() {
        closed = true;
    }

    private long ptr() {
        if (closed)
            throw new IllegalStateException("context used after its handler returned");
        return ptr;
    }

    private static int scope(String scope) {
        if (scope == null || scope.equals(LOCAL))
            return 0;
        if (scope.equals(GLOBAL))
            return 1;
        throw new IllegalArgumentException("scope must be \"local\" or \"global\", not \"" + scope + "\"");
    }

    private static byte[] utf8(String s, String what) {
        if (s == null)
            throw new NullPointerException(what);
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static void check(int rc, String key) {
        switch (rc) {
        case 0:
            return;
        case ETOOBIG:
            throw new IllegalArgumentException("value for '" + key + "' is over the size limit");
        case EINVAL:
            throw new IllegalArgumentException("invalid key '" + key + "'");
        case ENOMEM:
            throw new OutOfMemoryError("data layer: out of memory for '" + key + "'");
        default:
            throw new UncheckedIOException(new IOException("data layer unavailable for '" + key + "'"));
        }
    }

    /** Stores value (any bytes, may be empty) under key in the local data layer. */
    public void put(String key, byte[] value) {
        put(key, value, LOCAL);
    }

    /**
     * Stores value under key in scope ("local" or "global"). Throws IllegalArgumentException
     * for a value over the size limit (SAND_VALUE_MAX, default 64 MiB), UncheckedIOException
     * when the data layer cannot be reached.
     */
    public void put(String key, byte[] value, String scope) {
        if (value == null)
            throw new NullPointerException("value");
        check(nPut(ptr(), utf8(key, "key"), value, scope(scope)), key);
    }

    /** Stores the UTF-8 encoding of value under key in the local data layer. */
    public void put(String key, String value) {
        put(key, utf8(value, "value"), LOCAL);
    }

    /** Stores the UTF-8 encoding of value under key in scope. */
    public void put(String key, String value, String scope) {
        put(key, utf8(value, "value"), scope);
    }

    /** Returns the value stored under key in the local data layer, or null if absent. */
    public byte[] get(String key) {
        return get(key, LOCAL);
    }

    /** Returns the value stored under key in scope, or null if absent. */
    public byte[] get(String key, String scope) {
        int[] rc = new int[1];
        byte[] v = nGet(ptr(), utf8(key, "key"), scope(scope), rc);
        if (rc[0] == ENOTFOUND)
            return null;
        check(rc[0], key);
        return v;
    }

    /** Returns the value under key in scope decoded as UTF-8, or null if absent. */
    public String getString(String key, String scope) {
        byte[] v = get(key, scope);
        return v == null ? null : new String(v, StandardCharsets.UTF_8);
    }

    /** Deletes key from the local data layer (no error if it does not exist). */
    public void delete(String key) {
        delete(key, LOCAL);
    }

    /** Deletes key from scope (no error if it does not exist). */
    public void delete(String key, String scope) {
        check(nDelete(ptr(), utf8(key, "key"), scope(scope)), key);
    }

    /**
     * Writes one line to the app's log (kind "log"), tagged with grain, step and execution id:
     * fmt alone, or String.format(fmt, args). Lines over 16 KiB are truncated.
     */
    public void log(String fmt, Object... args) {
        String text = args.length == 0 ? fmt : String.format(fmt, args);
        nLog(ptr(), KIND_LOG, utf8(String.valueOf(text), "line"));
    }

    /**
     * Sends eventJson (one JSON value) to step of the current workflow; the calls of one
     * instance replace the step's static next. Throws IllegalArgumentException when the step
     * does not exist, when there is no workflow (a direct grain invocation) or when eventJson
     * is not JSON.
     */
    public void next(String step, String eventJson) {
        int rc = nNext(ptr(), utf8(step, "step"), utf8(eventJson, "eventJson"));
        if (rc == 0)
            return;
        String wf = workflow();
        if (wf.isEmpty())
            throw new IllegalArgumentException("next('" + step + "'): a direct grain invocation has no workflow");
        throw new IllegalArgumentException("next('" + step + "'): no such step in workflow '" + wf
                                           + "', or the event is not JSON");
    }

    private String id(int which) {
        return new String(nId(ptr(), which), StandardCharsets.UTF_8);
    }

    /** The app's name. */
    public String app() {
        return id(0);
    }

    /** The grain's name. */
    public String grain() {
        return id(1);
    }

    /** The workflow step this instance runs (the grain's name for a direct invocation). */
    public String step() {
        return id(2);
    }

    /** The workflow's name, "" for a direct grain invocation. */
    public String workflow() {
        return id(3);
    }

    /** The execution id. */
    public String executionId() {
        return id(4);
    }

    /** 1 on the first run, 2 on the first retry... */
    public int attempt() {
        return nAttempt(ptr());
    }

    /** Milliseconds before the instance is timed out (grain timeout or execution deadline). */
    public long remainingMs() {
        return nRemaining(ptr());
    }

    /* One line of the instance's System.out / System.err (Invoker's streams). */
    void stdLine(int kind, byte[] line) {
        if (closed || stdTruncated)
            return;
        if (stdLogged >= STD_BYTES_MAX) {
            stdTruncated = true;
            nLog(ptr, KIND_SYSTEM, "output truncated".getBytes(StandardCharsets.UTF_8));
            return;
        }
        stdLogged += line.length + 1;
        nLog(ptr, kind, line);
    }

    private static native int nPut(long ctx, byte[] key, byte[] value, int scope);
    private static native byte[] nGet(long ctx, byte[] key, int scope, int[] rc);
    private static native int nDelete(long ctx, byte[] key, int scope);
    private static native void nLog(long ctx, int kind, byte[] line);
    private static native int nNext(long ctx, byte[] step, byte[] json);
    private static native byte[] nId(long ctx, int which);
    private static native int nAttempt(long ctx);
    private static native long nRemaining(long ctx);
}
