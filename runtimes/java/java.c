/*
 * The Java runtime of the grain worker: embeds one JVM per worker with the JNI invocation API
 * (libjvm of the system JDK), started once when the worker loads the grain, with sand.jar and
 * the grain's jar or class directory on the class path and the grain's jvm_options. The grain
 * class (`handler`, a sand.Grain) is instantiated once. A JVM cannot be forked, so the runtime
 * asks the worker core for threads mode: each event runs on an instance thread attached to the
 * JVM once (as a daemon, so that it never holds the JVM up), through sand.Invoker.run(). The
 * native methods of sand.Context are registered here and call the same sand_ctx_* functions
 * as C grains. load() runs on the worker's main thread; invoke(), thread_start() and
 * thread_stop() on instance threads; interrupt() on the main (loop) thread.
 */
#include "sand/worker.h"

#include <jansson.h>
#include <jni.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COMP "java"

extern const sand_worker_runtime_t sand_java_runtime;

typedef struct java_state {
    JavaVM *vm;
    jobject grain;  /* global ref: the one instance of the grain class */
    jclass invoker; /* global ref: sand.Invoker */
    jmethodID run;  /* static byte[][] run(Grain, byte[], long) */
    jclass thread;  /* global ref: java.lang.Thread */
    jmethodID current, interrupt, stop;
} java_state_t;

/* The JNI environment of the calling instance thread (set by thread_start). */
static __thread JNIEnv *tls_env;

static JNIEnv *env_of(java_state_t *st)
{
    if (tls_env)
        return tls_env;
    JNIEnv *env = NULL;
    if ((*st->vm)->GetEnv(st->vm, (void **)&env, JNI_VERSION_10) != JNI_OK)
        return NULL;
    return env;
}

/* ---- sand.Context natives ------------------------------------------------------------ */

static sand_context *ctx_of(jlong p)
{
    return (sand_context *)(intptr_t)p;
}

/* Copies a byte[] into a NUL-terminated C string; NULL when it holds a NUL byte or on
 * allocation failure (*rc says which). The caller frees it. */
static char *cstr(JNIEnv *env, jbyteArray a, int *rc)
{
    jsize n = (*env)->GetArrayLength(env, a);
    char *s = malloc((size_t)n + 1);
    if (!s) {
        *rc = SAND_GRAIN_ENOMEM;
        return NULL;
    }
    (*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)s);
    s[n] = 0;
    if (memchr(s, 0, (size_t)n)) {
        free(s);
        *rc = SAND_GRAIN_EINVAL;
        return NULL;
    }
    return s;
}

static jint JNICALL n_put(JNIEnv *env, jclass cls, jlong p, jbyteArray key, jbyteArray val,
                          jint scope)
{
    sand_context *ctx = ctx_of(p);
    int rc = 0;
    jsize n = (*env)->GetArrayLength(env, val);
    if ((size_t)n > sand_worker_ctx_value_max(ctx))
        return SAND_GRAIN_ETOOBIG;
    char *k = cstr(env, key, &rc);
    if (!k)
        return rc;
    void *buf = malloc(n ? (size_t)n : 1);
    if (!buf) {
        free(k);
        return SAND_GRAIN_ENOMEM;
    }
    (*env)->GetByteArrayRegion(env, val, 0, n, buf);
    rc = sand_ctx_put(ctx, k, buf, (size_t)n, scope);
    free(buf);
    free(k);
    return rc;
}

static jbyteArray JNICALL n_get(JNIEnv *env, jclass cls, jlong p, jbyteArray key, jint scope,
                                jintArray rcout)
{
    int rc = 0;
    jint code;
    jbyteArray out = NULL;
    char *k = cstr(env, key, &rc);
    if (k) {
        void *val = NULL;
        size_t len = 0;
        rc = sand_ctx_get(ctx_of(p), k, &val, &len, scope);
        free(k);
        if (rc == 0 && len > INT_MAX)
            rc = SAND_GRAIN_ETOOBIG;
        if (rc == 0) {
            out = (*env)->NewByteArray(env, (jsize)len);
            if (out)
                (*env)->SetByteArrayRegion(env, out, 0, (jsize)len, val);
            else
                rc = SAND_GRAIN_ENOMEM; /* an OutOfMemoryError is pending too */
        }
        free(val);
    }
    code = rc;
    (*env)->SetIntArrayRegion(env, rcout, 0, 1, &code);
    return out;
}

static jint JNICALL n_delete(JNIEnv *env, jclass cls, jlong p, jbyteArray key, jint scope)
{
    int rc = 0;
    char *k = cstr(env, key, &rc);
    if (!k)
        return rc;
    rc = sand_ctx_delete(ctx_of(p), k, scope);
    free(k);
    return rc;
}

static void JNICALL n_log(JNIEnv *env, jclass cls, jlong p, jint kind, jbyteArray line)
{
    static const char *const kinds[] = {"log", "stdout", "stderr", "system"};
    jsize n = (*env)->GetArrayLength(env, line);
    size_t len = (size_t)n < SAND_WORKER_LOG_LINE_MAX ? (size_t)n : SAND_WORKER_LOG_LINE_MAX;
    char *buf = malloc(len ? len : 1);
    if (!buf)
        return;
    (*env)->GetByteArrayRegion(env, line, 0, (jsize)len, (jbyte *)buf);
    sand_worker_ctx_log_line(ctx_of(p), kind >= 0 && kind < 4 ? kinds[kind] : "log", buf, len);
    free(buf);
}

static jint JNICALL n_next(JNIEnv *env, jclass cls, jlong p, jbyteArray step, jbyteArray json)
{
    int rc = 0;
    char *s = cstr(env, step, &rc);
    if (!s)
        return rc;
    jsize n = (*env)->GetArrayLength(env, json);
    char *j = malloc(n ? (size_t)n : 1);
    if (!j) {
        free(s);
        return SAND_GRAIN_ENOMEM;
    }
    (*env)->GetByteArrayRegion(env, json, 0, n, (jbyte *)j);
    rc = sand_ctx_next(ctx_of(p), s, j, (size_t)n);
    free(j);
    free(s);
    return rc;
}

static jbyteArray JNICALL n_id(JNIEnv *env, jclass cls, jlong p, jint which)
{
    const sand_context *ctx = ctx_of(p);
    const char *v = "";
    switch (which) {
    case 0:
        v = sand_ctx_app(ctx);
        break;
    case 1:
        v = sand_ctx_grain(ctx);
        break;
    case 2:
        v = sand_ctx_step(ctx);
        break;
    case 3:
        v = sand_ctx_workflow(ctx);
        break;
    case 4:
        v = sand_ctx_execution_id(ctx);
        break;
    default:
        break;
    }
    jsize n = (jsize)strlen(v);
    jbyteArray a = (*env)->NewByteArray(env, n);
    if (a)
        (*env)->SetByteArrayRegion(env, a, 0, n, (const jbyte *)v);
    return a;
}

static jint JNICALL n_attempt(JNIEnv *env, jclass cls, jlong p)
{
    return sand_ctx_attempt(ctx_of(p));
}

static jlong JNICALL n_remaining(JNIEnv *env, jclass cls, jlong p)
{
    return sand_ctx_remaining_ms(ctx_of(p));
}

static const JNINativeMethod context_natives[] = {
    {"nPut", "(J[B[BI)I", (void *)n_put},     {"nGet", "(J[BI[I)[B", (void *)n_get},
    {"nDelete", "(J[BI)I", (void *)n_delete}, {"nLog", "(JI[B)V", (void *)n_log},
    {"nNext", "(J[B[B)I", (void *)n_next},    {"nId", "(JI)[B", (void *)n_id},
    {"nAttempt", "(J)I", (void *)n_attempt},  {"nRemaining", "(J)J", (void *)n_remaining},
};

/* ---- loading ------------------------------------------------------------------------- */

/* Copies element i of a byte[][] into a malloc'd NUL-terminated string ("" when absent). */
static char *elem_str(JNIEnv *env, jobjectArray arr, jsize i, size_t *len)
{
    jbyteArray a = (jbyteArray)(*env)->GetObjectArrayElement(env, arr, i);
    jsize n = a ? (*env)->GetArrayLength(env, a) : 0;
    char *s = malloc((size_t)n + 1);
    if (s && n)
        (*env)->GetByteArrayRegion(env, a, 0, n, (jbyte *)s);
    if (s)
        s[n] = 0;
    if (len)
        *len = s ? (size_t)n : 0;
    if (a)
        (*env)->DeleteLocalRef(env, a);
    return s;
}

/* Describes the pending exception (class, message, stack trace) with sand.Invoker.describe()
 * when it is loaded, and clears it. Returns the message in err and the trace in *detail. */
static void pending_exception(JNIEnv *env, java_state_t *st, const char *what, char **detail,
                              sand_err *err)
{
    jthrowable t = (*env)->ExceptionOccurred(env);
    (*env)->ExceptionClear(env);
    jmethodID describe = st->invoker ? (*env)->GetStaticMethodID(env, st->invoker, "describe",
                                                                 "(Ljava/lang/Throwable;)[[B")
                                     : NULL;
    if (!t || !describe) {
        (*env)->ExceptionClear(env);
        sand_err_set(err, SAND_EINVAL, "%s failed", what);
        return;
    }
    jobjectArray d = (jobjectArray)(*env)->CallStaticObjectMethod(env, st->invoker, describe, t);
    if ((*env)->ExceptionCheck(env) || !d) {
        (*env)->ExceptionClear(env);
        sand_err_set(err, SAND_EINVAL, "%s failed", what);
        return;
    }
    char *type = elem_str(env, d, 0, NULL), *msg = elem_str(env, d, 1, NULL);
    sand_err_set(err, SAND_EINVAL, "%s: %s: %s", what, type ? type : "?", msg ? msg : "");
    free(type);
    free(msg);
    if (detail)
        *detail = elem_str(env, d, 2, NULL);
}

/* Finds sand.jar: $SAND_LIB_DIR/sand.jar, then next to the executable (../lib/sand.jar,
 * ../lib/sand/sand.jar, sand.jar), then the build tree's. */
static int find_sand_jar(char *out, size_t n)
{
    const char *lib = getenv("SAND_LIB_DIR");
    if (lib && *lib) {
        snprintf(out, n, "%s/sand.jar", lib);
        if (access(out, R_OK) == 0)
            return 0;
    }
    char exe[PATH_MAX];
    ssize_t len = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (len > 0) {
        exe[len] = 0;
        char *slash = strrchr(exe, '/');
        if (slash)
            *slash = 0;
        static const char *const rel[] = {"/../lib/sand.jar", "/../lib/sand/sand.jar", "/sand.jar"};
        for (size_t i = 0; i < SAND_ARRAY_LEN(rel); i++) {
            snprintf(out, n, "%s%s", exe, rel[i]);
            if (access(out, R_OK) == 0)
                return 0;
        }
    }
    snprintf(out, n, "%s", SAND_JAR_BUILD);
    return access(out, R_OK) == 0 ? 0 : -1;
}

static int java_load(const sand_worker_info_t *info, void **state, char **detail, sand_err *err)
{
    char jar[PATH_MAX];
    *state = NULL;
    *detail = NULL;
    const char *cls = info->grain->handler;
    if (!cls || !*cls)
        return sand_err_set(err, SAND_EINVAL,
                            "a java grain needs 'handler': the class implementing sand.Grain");
    if (find_sand_jar(jar, sizeof(jar)) < 0)
        return sand_err_set(err, SAND_ENOTFOUND, "sand.jar not found (set SAND_LIB_DIR)");
    if (access(info->code_path, R_OK) != 0)
        return sand_err_errno(err, SAND_ENOTFOUND, "code '%s'", info->code_path);

    java_state_t *st = calloc(1, sizeof(*st));
    if (!st)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    *state = st;

    /* options: the class path, -Xrs (the worker keeps SIGTERM/SIGINT/SIGQUIT for itself),
     * then the grain's jvm_options, space separated */
    sand_bytes_t cp;
    sand_bytes_init(&cp, SIZE_MAX);
    sand_bytes_appendf(&cp, "-Djava.class.path=%s:%s", jar, info->code_path);
    char *opts_copy = info->grain->jvm_options ? sand_strdup(info->grain->jvm_options) : NULL;
    JavaVMOption opts[66];
    int nopts = 0;
    memset(opts, 0, sizeof(opts));
    opts[nopts++].optionString = cp.data;
    opts[nopts++].optionString = "-Xrs";
    char *save = NULL;
    for (char *tok = opts_copy ? strtok_r(opts_copy, " \t", &save) : NULL; tok;
         tok = strtok_r(NULL, " \t", &save)) {
        if (nopts == (int)SAND_ARRAY_LEN(opts)) {
            free(opts_copy);
            sand_bytes_release(&cp);
            return sand_err_set(err, SAND_EINVAL, "too many jvm_options (at most %d)",
                                (int)SAND_ARRAY_LEN(opts) - 2);
        }
        opts[nopts++].optionString = tok;
    }
    JavaVMInitArgs args = {.version = JNI_VERSION_10,
                           .nOptions = nopts,
                           .options = opts,
                           .ignoreUnrecognized = JNI_FALSE};
    JNIEnv *env = NULL;
    int64_t t0 = sand_mono_us();
    jint rc = JNI_CreateJavaVM(&st->vm, (void **)&env, &args);
    int64_t t1 = sand_mono_us();
    free(opts_copy);
    sand_bytes_release(&cp);
    if (rc != JNI_OK) {
        st->vm = NULL;
        return sand_err_set(err, SAND_EINVAL,
                            "cannot start the JVM (error %d; check jvm_options '%s')", (int)rc,
                            info->grain->jvm_options ? info->grain->jvm_options : "");
    }
    SAND_INFO(COMP, "grain '%s': JVM started in %.1f ms", info->grain->name,
              (double)(t1 - t0) / 1000.0);

    jclass c = (*env)->FindClass(env, "sand/Invoker");
    jclass ctxc = c ? (*env)->FindClass(env, "sand/Context") : NULL;
    jclass thr = ctxc ? (*env)->FindClass(env, "java/lang/Thread") : NULL;
    if (!thr) {
        (*env)->ExceptionClear(env);
        return sand_err_set(err, SAND_EINVAL, "'%s' does not hold sand.Invoker/sand.Context", jar);
    }
    st->invoker = (*env)->NewGlobalRef(env, c);
    st->thread = (*env)->NewGlobalRef(env, thr);
    if ((*env)->RegisterNatives(env, ctxc, context_natives, SAND_ARRAY_LEN(context_natives)) < 0) {
        (*env)->ExceptionClear(env);
        return sand_err_set(err, SAND_EINVAL, "sand.jar does not match this worker");
    }
    st->run = (*env)->GetStaticMethodID(env, c, "run", "(Lsand/Grain;[BJ)[[B");
    jmethodID load = (*env)->GetStaticMethodID(env, c, "load", "(Ljava/lang/String;)Lsand/Grain;");
    st->current = (*env)->GetStaticMethodID(env, thr, "currentThread", "()Ljava/lang/Thread;");
    st->interrupt = (*env)->GetMethodID(env, thr, "interrupt", "()V");
    st->stop = (*env)->GetMethodID(env, thr, "stop", "()V");
    if (!st->run || !load || !st->current || !st->interrupt || !st->stop) {
        (*env)->ExceptionClear(env);
        return sand_err_set(err, SAND_EINVAL, "sand.jar does not match this worker");
    }
    jstring name = (*env)->NewStringUTF(env, cls);
    jobject g = name ? (*env)->CallStaticObjectMethod(env, c, load, name) : NULL;
    if ((*env)->ExceptionCheck(env) || !g) {
        char what[300];
        snprintf(what, sizeof(what), "cannot load grain class '%s'", cls);
        pending_exception(env, st, what, detail, err);
        return err->code;
    }
    st->grain = (*env)->NewGlobalRef(env, g);
    (*env)->DeleteLocalRef(env, g);
    (*env)->DeleteLocalRef(env, name);
    return 0;
}

/* ---- instance threads ---------------------------------------------------------------- */

static void *java_thread_start(void *state)
{
    java_state_t *st = state;
    JNIEnv *env = NULL;
    JavaVMAttachArgs a = {.version = JNI_VERSION_10, .name = "sand-instance", .group = NULL};
    if ((*st->vm)->AttachCurrentThreadAsDaemon(st->vm, (void **)&env, &a) != JNI_OK) {
        SAND_ERROR(COMP, "cannot attach an instance thread to the JVM");
        return NULL;
    }
    tls_env = env;
    jobject self = (*env)->CallStaticObjectMethod(env, st->thread, st->current);
    jobject token = self ? (*env)->NewGlobalRef(env, self) : NULL;
    (*env)->ExceptionClear(env);
    if (self)
        (*env)->DeleteLocalRef(env, self);
    return token;
}

static void java_thread_stop(void *state, void *token)
{
    java_state_t *st = state;
    JNIEnv *env = tls_env;
    if (!env)
        return;
    if (token)
        (*env)->DeleteGlobalRef(env, (jobject)token);
    tls_env = NULL;
    (*st->vm)->DetachCurrentThread(st->vm);
}

/* Thread.interrupt(); when forced, Thread.stop() (ThreadDeath at the thread's next safepoint;
 * JDKs that removed it throw UnsupportedOperationException, which is ignored). */
static void java_interrupt(void *state, void *token, bool force)
{
    java_state_t *st = state;
    JNIEnv *env = env_of(st);
    if (!env || !token)
        return;
    (*env)->CallVoidMethod(env, (jobject)token, force ? st->stop : st->interrupt);
    (*env)->ExceptionClear(env);
}

/* ---- events -------------------------------------------------------------------------- */

static void java_invoke(void *state, sand_context *ctx, const sand_event *ev)
{
    java_state_t *st = state;
    JNIEnv *env = env_of(st);
    if (!env) {
        sand_worker_ctx_fail(ctx, "Error", "instance thread not attached to the JVM", NULL);
        return;
    }
    if ((*env)->PushLocalFrame(env, 16) < 0) {
        (*env)->ExceptionClear(env);
        sand_worker_ctx_fail(ctx, "java.lang.OutOfMemoryError", "no room for local references",
                             NULL);
        return;
    }
    jbyteArray event = ev->len <= INT_MAX ? (*env)->NewByteArray(env, (jsize)ev->len) : NULL;
    jobjectArray res = NULL;
    sand_worker_ctx_started(ctx);
    if (event) {
        (*env)->SetByteArrayRegion(env, event, 0, (jsize)ev->len, (const jbyte *)ev->data);
        res = (jobjectArray)(*env)->CallStaticObjectMethod(env, st->invoker, st->run, st->grain,
                                                           event, (jlong)(intptr_t)ctx);
    }
    sand_worker_ctx_finished(ctx);
    if ((*env)->ExceptionCheck(env) || !res) {
        sand_err err = {0};
        char *trace = NULL;
        pending_exception(env, st, "grain invocation", &trace, &err);
        sand_worker_ctx_fail(ctx, "Error", err.msg, trace);
        free(trace);
    } else if ((*env)->GetArrayLength(env, res) == 1) {
        size_t len;
        char *out = elem_str(env, res, 0, &len);
        json_error_t jerr;
        json_t *v = out ? json_loadb(out, len, JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr) : NULL;
        if (v) {
            json_decref(v);
            sand_worker_ctx_output(ctx, out, len);
        } else {
            sand_worker_ctx_fail(ctx, "Error", "handler output is not valid JSON", NULL);
        }
        free(out);
    } else {
        char *type = elem_str(env, res, 0, NULL), *msg = elem_str(env, res, 1, NULL);
        char *trace = elem_str(env, res, 2, NULL);
        sand_worker_ctx_fail(ctx, type ? type : "Error", msg ? msg : "", trace);
        free(type);
        free(msg);
        free(trace);
    }
    (*env)->PopLocalFrame(env, NULL);
}

/* The JVM is never destroyed: an abandoned instance thread may still run in it, and
 * DestroyJavaVM would wait for it; the worker process exits right after this. */
const sand_worker_runtime_t sand_java_runtime = {
    .name = "java",
    .load_error_type = "LoadError",
    .load = java_load,
    .invoke = java_invoke,
    .threads = true,
    .thread_start = java_thread_start,
    .thread_stop = java_thread_stop,
    .interrupt = java_interrupt,
};
