/*
 * The Python runtime of the grain worker: embeds Debian's CPython, imports the grain's module
 * once in the worker (so module-level imports are shared copy-on-write by every forked
 * instance), freezes the garbage collector's view of those objects before each fork so that
 * instances do not dirty their pages, and runs handle(event, context) in the instance. The
 * context is a C extension type (_sand.Context) over the core's sand_context: ids, remaining_ms,
 * log, put/get/delete on the data layer and next for dynamic routing. Runs on the worker's only
 * thread, which holds the GIL for the whole life of the process.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <malloc.h>

#include "sand/worker.h"

#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

extern const sand_worker_runtime_t sand_python_runtime;

typedef struct py_state {
    PyObject *handler;
    PyObject *json_loads, *json_dumps;
    PyObject *format_exception;
    PyObject *gc_freeze;
    PyObject *stdout_orig, *stderr_orig; /* sys.stdout/stderr as configured: write-through */
    pid_t worker_pid;
} py_state_t;

/* ---- JSON ----------------------------------------------------------------------------
 * Events and outputs go through the C scanner and encoder of the json module directly: what
 * json.loads()/json.dumps() do with their defaults, without the Python-level wrappers around
 * them. In a forked instance every Python function run for the first time writes to shared
 * pages (reference counts, the type cache), so each line of library Python skipped is a few
 * copy-on-write faults less. Anything the fast path does not take (bad JSON, an object json
 * cannot encode) goes through json.loads()/json.dumps() for their exact errors. */

static struct {
    PyObject *scan_once;    /* json._default_decoder.scan_once (the C scanner) */
    PyObject *make_encoder; /* json.encoder.c_make_encoder */
    PyObject *enc_default;  /* json._default_encoder.default */
    PyObject *enc_string;   /* json.encoder.encode_basestring_ascii */
    PyObject *key_sep, *item_sep, *empty;
    PyObject *encoder; /* c_make_encoder(markers, ...) with json.dumps()' defaults */
    PyObject *markers; /* its circular-reference markers: empty between calls */
    PyObject *zero;
} J;

static void json_fast_init(void)
{
    PyObject *json = PyImport_ImportModule("json");
    PyObject *encoder = PyImport_ImportModule("json.encoder");
    PyObject *dec = json ? PyObject_GetAttrString(json, "_default_decoder") : NULL;
    PyObject *enc = json ? PyObject_GetAttrString(json, "_default_encoder") : NULL;
    if (dec && enc && encoder) {
        J.scan_once = PyObject_GetAttrString(dec, "scan_once");
        J.make_encoder = PyObject_GetAttrString(encoder, "c_make_encoder");
        J.enc_default = PyObject_GetAttrString(enc, "default");
        J.enc_string = PyObject_GetAttrString(encoder, "encode_basestring_ascii");
        J.key_sep = PyUnicode_FromString(": ");
        J.item_sep = PyUnicode_FromString(", ");
        J.empty = PyUnicode_FromString("");
    }
    if (!J.scan_once || !J.make_encoder || J.make_encoder == Py_None || !J.enc_default ||
        !J.enc_string || !J.key_sep || !J.item_sep || !J.empty)
        Py_CLEAR(J.make_encoder); /* no C accelerator: json.dumps() only */
    /* One encoder, made here: in an instance, making one per output ran the argument parser
     * and touched a dozen pages shared with the worker. */
    if (J.make_encoder && (J.markers = PyDict_New()) && (J.zero = PyLong_FromLong(0)))
        J.encoder = PyObject_CallFunction(J.make_encoder, "OOOOOOOOO", J.markers, J.enc_default,
                                          J.enc_string, Py_None, J.key_sep, J.item_sep, Py_False,
                                          Py_False, Py_True);
    if (!J.encoder || !J.zero)
        Py_CLEAR(J.make_encoder);
    PyErr_Clear();
    Py_XDECREF(dec);
    Py_XDECREF(enc);
    Py_XDECREF(encoder);
    Py_XDECREF(json);
}

static bool json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* json.loads(data). Returns a new reference or NULL with the exception set. */
static PyObject *json_decode(PyObject *loads, const char *data, size_t len)
{
    if (J.scan_once) {
        size_t a = 0, b = len;
        while (a < b && json_space(data[a]))
            a++;
        while (b > a && json_space(data[b - 1]))
            b--;
        PyObject *s = PyUnicode_DecodeUTF8(data + a, (Py_ssize_t)(b - a), "surrogatepass");
        PyObject *args[2] = {s, J.zero};
        PyObject *r = s && J.zero ? PyObject_Vectorcall(J.scan_once, args, 2, NULL) : NULL;
        PyObject *obj = NULL;
        if (r && PyTuple_Check(r) && PyTuple_GET_SIZE(r) == 2 &&
            PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 1)) == PyUnicode_GET_LENGTH(s))
            obj = Py_NewRef(PyTuple_GET_ITEM(r, 0));
        Py_XDECREF(r);
        Py_XDECREF(s);
        if (obj)
            return obj;
        PyErr_Clear();
    }
    PyObject *raw = PyBytes_FromStringAndSize(data, (Py_ssize_t)len);
    PyObject *obj = raw ? PyObject_CallOneArg(loads, raw) : NULL;
    Py_XDECREF(raw);
    return obj;
}

/* json.dumps(obj). Returns a new reference or NULL with the exception set. */
static PyObject *json_encode(PyObject *dumps, PyObject *obj)
{
    if (J.make_encoder) {
        PyObject *args[2] = {obj, J.zero};
        PyObject *chunks = PyObject_Vectorcall(J.encoder, args, 2, NULL);
        PyObject *text = chunks ? PyUnicode_Join(J.empty, chunks) : NULL;
        Py_XDECREF(chunks);
        if (text)
            return text;
        PyDict_Clear(J.markers); /* an error left the containers it was in (reuse mode) */
        PyErr_Clear();
    }
    return PyObject_CallOneArg(dumps, obj);
}

/* Runs the decoder and the encoder a few times in the worker: the interned identifiers they
 * look up, their argument parsers and their caches are set up once here (and frozen) instead
 * of in every instance, where each was a copy-on-write fault (about 25 per event). */
static void json_warm(PyObject *loads, PyObject *dumps)
{
    static const char sample[] = "{\"s\": \"t\\u00e9xt\", \"i\": [1, -2, 30000000000], \"f\": 2.5, "
                                 "\"t\": true, \"n\": null, \"o\": {\"k\": false}, \"e\": []}";
    for (int i = 0; i < 3; i++) {
        PyObject *o = json_decode(loads, sample, sizeof(sample) - 1);
        PyObject *t = o ? json_encode(dumps, o) : NULL;
        Py_XDECREF(t);
        Py_XDECREF(o);
    }
    PyErr_Clear();
}

/* ---- _sand.Context ------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD sand_context *ctx; /* NULL once the handler returned */
    PyObject *json_dumps;
} ContextObject;

static sand_context *ctx_of(ContextObject *self)
{
    if (!self->ctx)
        PyErr_SetString(PyExc_RuntimeError, "context used after its handler returned");
    return self->ctx;
}

static int parse_scope(const char *scope)
{
    if (!scope || strcmp(scope, "local") == 0)
        return SAND_SCOPE_LOCAL;
    if (strcmp(scope, "global") == 0)
        return SAND_SCOPE_GLOBAL;
    PyErr_Format(PyExc_ValueError, "scope must be 'local' or 'global', not '%s'", scope);
    return -1;
}

static PyObject *dl_error(int rc, const char *key)
{
    if (rc == SAND_GRAIN_ETOOBIG)
        return PyErr_Format(PyExc_ValueError, "value for '%s' is over the size limit", key);
    if (rc == SAND_GRAIN_ENOMEM)
        return PyErr_NoMemory();
    if (rc == SAND_GRAIN_EINVAL)
        return PyErr_Format(PyExc_ValueError, "invalid key '%s'", key);
    return PyErr_Format(PyExc_ConnectionError, "data layer unavailable for '%s'", key);
}

static PyObject *Context_put(ContextObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "value", "scope", NULL};
    const char *key, *scope = "local";
    PyObject *value;
    sand_context *ctx = ctx_of(self);
    if (!ctx || !PyArg_ParseTupleAndKeywords(args, kw, "sO|s:put", kwlist, &key, &value, &scope))
        return NULL;
    int sc = parse_scope(scope);
    if (sc < 0)
        return NULL;
    const char *data;
    Py_ssize_t len;
    Py_buffer view = {0};
    if (PyUnicode_Check(value)) {
        if (!(data = PyUnicode_AsUTF8AndSize(value, &len)))
            return NULL;
    } else if (PyObject_GetBuffer(value, &view, PyBUF_SIMPLE) == 0) {
        data = view.buf;
        len = view.len;
    } else {
        PyErr_Clear();
        return PyErr_Format(PyExc_TypeError, "value must be bytes or str, not %s",
                            Py_TYPE(value)->tp_name);
    }
    int rc;
    if ((size_t)len > sand_worker_ctx_value_max(ctx)) {
        rc = SAND_GRAIN_ETOOBIG;
    } else {
        rc = sand_ctx_put(ctx, key, data, (size_t)len, sc);
    }
    if (view.obj)
        PyBuffer_Release(&view);
    if (rc < 0)
        return dl_error(rc, key);
    Py_RETURN_NONE;
}

static PyObject *Context_get(ContextObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "scope", NULL};
    const char *key, *scope = "local";
    sand_context *ctx = ctx_of(self);
    if (!ctx || !PyArg_ParseTupleAndKeywords(args, kw, "s|s:get", kwlist, &key, &scope))
        return NULL;
    int sc = parse_scope(scope);
    if (sc < 0)
        return NULL;
    void *val;
    size_t len;
    int rc = sand_ctx_get(ctx, key, &val, &len, sc);
    if (rc == SAND_GRAIN_ENOTFOUND)
        Py_RETURN_NONE;
    if (rc < 0)
        return dl_error(rc, key);
    PyObject *b = PyBytes_FromStringAndSize(val, (Py_ssize_t)len);
    free(val);
    return b;
}

static PyObject *Context_delete(ContextObject *self, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"key", "scope", NULL};
    const char *key, *scope = "local";
    sand_context *ctx = ctx_of(self);
    if (!ctx || !PyArg_ParseTupleAndKeywords(args, kw, "s|s:delete", kwlist, &key, &scope))
        return NULL;
    int sc = parse_scope(scope);
    if (sc < 0)
        return NULL;
    int rc = sand_ctx_delete(ctx, key, sc);
    if (rc < 0)
        return dl_error(rc, key);
    Py_RETURN_NONE;
}

static PyObject *Context_log(ContextObject *self, PyObject *args)
{
    sand_context *ctx = ctx_of(self);
    if (!ctx)
        return NULL;
    Py_ssize_t n = PyTuple_GET_SIZE(args);
    if (n < 1)
        return PyErr_Format(PyExc_TypeError, "log() needs a format string");
    PyObject *fmt = PyTuple_GET_ITEM(args, 0);
    PyObject *text;
    if (n == 1) {
        text = PyObject_Str(fmt);
    } else {
        PyObject *rest = PyTuple_GetSlice(args, 1, n);
        if (!rest)
            return NULL;
        text = PyUnicode_Check(fmt) ? PyUnicode_Format(fmt, rest) : NULL;
        if (!text && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "log() format must be a str");
        Py_DECREF(rest);
    }
    if (!text)
        return NULL;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    if (!s) {
        Py_DECREF(text);
        return NULL;
    }
    sand_worker_ctx_log_line(ctx, "log", s, (size_t)len);
    Py_DECREF(text);
    Py_RETURN_NONE;
}

static PyObject *Context_next(ContextObject *self, PyObject *args)
{
    const char *step;
    PyObject *event;
    sand_context *ctx = ctx_of(self);
    if (!ctx || !PyArg_ParseTuple(args, "sO:next", &step, &event))
        return NULL;
    PyObject *text = json_encode(self->json_dumps, event);
    if (!text)
        return NULL;
    Py_ssize_t len;
    const char *s = PyUnicode_AsUTF8AndSize(text, &len);
    int rc = s ? sand_ctx_next(ctx, step, s, (size_t)len) : -1;
    Py_DECREF(text);
    if (!s)
        return NULL;
    if (rc < 0) {
        const char *wf = sand_ctx_workflow(ctx);
        if (!wf[0])
            return PyErr_Format(PyExc_ValueError,
                                "next('%s'): a direct grain invocation has no workflow", step);
        return PyErr_Format(PyExc_ValueError, "next('%s'): no such step in workflow '%s'", step,
                            wf);
    }
    Py_RETURN_NONE;
}

static PyObject *Context_remaining_ms(ContextObject *self, PyObject *unused)
{
    sand_context *ctx = ctx_of(self);
    return ctx ? PyLong_FromLongLong(sand_ctx_remaining_ms(ctx)) : NULL;
}

static PyObject *str_attr(ContextObject *self, const char *(*get)(const sand_context *))
{
    sand_context *ctx = ctx_of(self);
    return ctx ? PyUnicode_FromString(get(ctx)) : NULL;
}

static PyObject *Context_app(ContextObject *self, void *c)
{
    return str_attr(self, sand_ctx_app);
}
static PyObject *Context_grain(ContextObject *self, void *c)
{
    return str_attr(self, sand_ctx_grain);
}
static PyObject *Context_step(ContextObject *self, void *c)
{
    return str_attr(self, sand_ctx_step);
}
static PyObject *Context_workflow(ContextObject *self, void *c)
{
    return str_attr(self, sand_ctx_workflow);
}
static PyObject *Context_execution_id(ContextObject *self, void *c)
{
    return str_attr(self, sand_ctx_execution_id);
}
static PyObject *Context_attempt(ContextObject *self, void *c)
{
    sand_context *ctx = ctx_of(self);
    return ctx ? PyLong_FromLong(sand_ctx_attempt(ctx)) : NULL;
}

static void Context_dealloc(ContextObject *self)
{
    Py_XDECREF(self->json_dumps);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef Context_methods[] = {
    {"put", (PyCFunction)(void (*)(void))Context_put, METH_VARARGS | METH_KEYWORDS,
     "put(key, value, scope='local'): store bytes or str (UTF-8) in the data layer"},
    {"get", (PyCFunction)(void (*)(void))Context_get, METH_VARARGS | METH_KEYWORDS,
     "get(key, scope='local') -> bytes or None"},
    {"delete", (PyCFunction)(void (*)(void))Context_delete, METH_VARARGS | METH_KEYWORDS,
     "delete(key, scope='local')"},
    {"log", (PyCFunction)Context_log, METH_VARARGS, "log(fmt, *args): one line to the app's log"},
    {"next", (PyCFunction)Context_next, METH_VARARGS,
     "next(step, event): send event to step (replaces the static next)"},
    {"remaining_ms", (PyCFunction)Context_remaining_ms, METH_NOARGS,
     "milliseconds left before the instance is killed"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Context_getset[] = {
    {"app", (getter)Context_app, NULL, "application name", NULL},
    {"grain", (getter)Context_grain, NULL, "grain name", NULL},
    {"step", (getter)Context_step, NULL, "step name", NULL},
    {"workflow", (getter)Context_workflow, NULL, "workflow name ('' when invoked directly)", NULL},
    {"execution_id", (getter)Context_execution_id, NULL, "execution id", NULL},
    {"attempt", (getter)Context_attempt, NULL, "1 on the first run, 2 on the first retry", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject ContextType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "_sand.Context",
    .tp_basicsize = sizeof(ContextObject),
    .tp_dealloc = (destructor)Context_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "the context of one grain instance",
    .tp_methods = Context_methods,
    .tp_getset = Context_getset,
};

static struct PyModuleDef sand_module = {
    PyModuleDef_HEAD_INIT,
    "_sand",
    "sand grain runtime internals",
    -1,
    NULL,
    NULL,
    NULL,
    NULL,
    NULL,
};

static PyObject *init_sand_module(void)
{
    if (PyType_Ready(&ContextType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&sand_module);
    if (!m)
        return NULL;
    Py_INCREF(&ContextType);
    if (PyModule_AddObject(m, "Context", (PyObject *)&ContextType) < 0) {
        Py_DECREF(&ContextType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}

/* ---- errors -------------------------------------------------------------------------- */

/* Reports the pending exception as the instance's failure (or, with err != NULL, fills the
 * load error). */
static void report_exception(py_state_t *st, sand_context *ctx, sand_err *err, char **detail)
{
    PyObject *etype, *exc, *etb;
    PyErr_Fetch(&etype, &exc, &etb);
    if (!etype)
        return;
    PyErr_NormalizeException(&etype, &exc, &etb);
    if (exc && etb)
        PyException_SetTraceback(exc, etb);
    Py_XDECREF(etb);
    Py_XDECREF(etype);
    if (!exc)
        return;
    const char *type = Py_TYPE(exc)->tp_name;
    const char *dot = strrchr(type, '.');
    if (dot)
        type = dot + 1;
    PyObject *msg = PyObject_Str(exc);
    const char *m = msg ? PyUnicode_AsUTF8(msg) : NULL;
    if (!m) {
        PyErr_Clear();
        m = "";
    }
    char *tb = NULL;
    if (st && st->format_exception) {
        PyObject *lines = PyObject_CallOneArg(st->format_exception, exc);
        PyObject *empty = PyUnicode_FromString("");
        PyObject *joined = lines && empty ? PyUnicode_Join(empty, lines) : NULL;
        const char *t = joined ? PyUnicode_AsUTF8(joined) : NULL;
        if (t)
            tb = strdup(t);
        PyErr_Clear();
        Py_XDECREF(joined);
        Py_XDECREF(empty);
        Py_XDECREF(lines);
    }
    if (ctx) {
        sand_worker_ctx_fail(ctx, type, m, tb);
        free(tb);
    } else {
        sand_err_set(err, SAND_EINVAL, "%s: %s", type, m);
        *detail = tb;
    }
    Py_XDECREF(msg);
    Py_DECREF(exc);
}

/* ---- the runtime --------------------------------------------------------------------- */

static PyObject *import_attr(const char *module, const char *name)
{
    PyObject *m = PyImport_ImportModule(module);
    if (!m)
        return NULL;
    PyObject *a = PyObject_GetAttrString(m, name);
    Py_DECREF(m);
    return a;
}

static int py_init(sand_err *err)
{
    PyConfig config;
    PyConfig_InitPythonConfig(&config);
    config.install_signal_handlers = 0; /* the worker owns SIGCHLD/SIGTERM */
    config.buffered_stdio = 0;          /* prints reach the log before os._exit() */
    config.parse_argv = 0;
    config.user_site_directory = 0;
    PyStatus s = PyConfig_SetBytesString(&config, &config.program_name, "sand-worker-python");
    if (!PyStatus_Exception(s))
        s = Py_InitializeFromConfig(&config);
    PyConfig_Clear(&config);
    if (PyStatus_Exception(s))
        return sand_err_set(err, SAND_EIO, "python init: %s", s.err_msg ? s.err_msg : "failed");
    return 0;
}

static int py_load(const sand_worker_info_t *info, void **state, char **detail, sand_err *err)
{
    *state = NULL;
    *detail = NULL;
    if (PyImport_AppendInittab("_sand", init_sand_module) < 0)
        return sand_err_set(err, SAND_EIO, "python: cannot register _sand");
    if (py_init(err) < 0)
        return err->code;
    py_state_t *st = calloc(1, sizeof(*st));
    if (!st)
        return sand_err_set(err, SAND_ENOMEM, "out of memory");
    *state = st;
    st->json_loads = import_attr("json", "loads");
    st->json_dumps = import_attr("json", "dumps");
    st->format_exception = import_attr("traceback", "format_exception");
    st->gc_freeze = import_attr("gc", "freeze");
    st->stdout_orig = Py_XNewRef(PySys_GetObject("stdout"));
    st->stderr_orig = Py_XNewRef(PySys_GetObject("stderr"));
    st->worker_pid = getpid();
    json_fast_init();
    if (st->json_loads && st->json_dumps)
        json_warm(st->json_loads, st->json_dumps);
    if (!st->json_loads || !st->json_dumps || !st->format_exception || !st->gc_freeze ||
        !PyImport_ImportModule("_sand")) {
        report_exception(NULL, NULL, err, detail);
        return SAND_EIO;
    }

    /* code: a .py file (its directory on sys.path) or a directory holding main.py */
    struct stat sb;
    char dir[4096], mod[256];
    if (stat(info->code_path, &sb) < 0)
        return sand_err_set(err, SAND_ENOTFOUND, "code '%s' not found", info->code_path);
    if (S_ISDIR(sb.st_mode)) {
        sand_strlcpy(dir, info->code_path, sizeof(dir));
        sand_strlcpy(mod, "main", sizeof(mod));
    } else {
        const char *slash = strrchr(info->code_path, '/');
        const char *base = slash ? slash + 1 : info->code_path;
        size_t dl = slash ? (size_t)(slash - info->code_path) : 0;
        if (dl >= sizeof(dir))
            return sand_err_set(err, SAND_ETOOBIG, "code path too long");
        memcpy(dir, info->code_path, dl);
        dir[dl] = 0;
        if (!dl)
            sand_strlcpy(dir, ".", sizeof(dir));
        sand_strlcpy(mod, base, sizeof(mod));
        char *ext = strrchr(mod, '.');
        if (ext && strcmp(ext, ".py") == 0)
            *ext = 0;
    }
    PyObject *path = PySys_GetObject("path"); /* borrowed */
    PyObject *d = PyUnicode_DecodeFSDefault(dir);
    if (!path || !d || PyList_Insert(path, 0, d) < 0) {
        Py_XDECREF(d);
        report_exception(st, NULL, err, detail);
        return SAND_EIO;
    }
    Py_DECREF(d);
    PyObject *m = PyImport_ImportModule(mod);
    if (!m) {
        report_exception(st, NULL, err, detail);
        return SAND_EINVAL;
    }
    const char *hname =
        info->grain->handler && *info->grain->handler ? info->grain->handler : "handle";
    st->handler = PyObject_GetAttrString(m, hname);
    Py_DECREF(m);
    if (!st->handler || !PyCallable_Check(st->handler)) {
        PyErr_Clear();
        return sand_err_set(err, SAND_ENOTFOUND, "AttributeError: module '%s' has no function '%s'",
                            mod, hname);
    }
    /* Everything loaded so far is shared by the instances: collect once, then freeze. */
    PyObject *r = PyObject_CallNoArgs(st->gc_freeze);
    Py_XDECREF(r);
    PyGC_Collect();
    r = PyObject_CallNoArgs(st->gc_freeze);
    Py_XDECREF(r);
    PyErr_Clear();
    return 0;
}

static void py_before_fork(void *state)
{
    py_state_t *st = state;
    /* Objects created since the last fork join the permanent generation, so no instance's
     * collector walks (and writes to) the pages it shares with the worker. The zygote runs no
     * Python between its forks: nothing new to freeze there. */
    if (st && st->gc_freeze && getpid() == st->worker_pid) {
        PyObject *r = PyObject_CallNoArgs(st->gc_freeze);
        Py_XDECREF(r);
        PyErr_Clear();
    }
    PyOS_BeforeFork();
}

/* ---- the instance's allocators --------------------------------------------------------------
 * In an instance, every Python allocation (the raw, mem and object domains) goes to the
 * instance heap, with the worker's allocator of the domain as its fallback. pymalloc would
 * otherwise fill the free blocks of the worker's arenas, which are shared copy-on-write. */

static PyMemAllocatorEx orig_alloc[3];
static sand_heap_fallback_t heap_fb[3];

static void *fb_malloc(void *ctx, size_t n)
{
    PyMemAllocatorEx *a = ctx;
    return a->malloc(a->ctx, n);
}

static void *fb_calloc(void *ctx, size_t nelem, size_t elsize)
{
    PyMemAllocatorEx *a = ctx;
    return a->calloc(a->ctx, nelem, elsize);
}

static void *fb_realloc(void *ctx, void *p, size_t n)
{
    PyMemAllocatorEx *a = ctx;
    return a->realloc(a->ctx, p, n);
}

static void fb_free(void *ctx, void *p)
{
    PyMemAllocatorEx *a = ctx;
    a->free(a->ctx, p);
}

static size_t fb_usable(void *ctx, void *p)
{
    (void)ctx;
    return malloc_usable_size(p);
}

static void *heap_malloc(void *ctx, size_t n)
{
    return sand_worker_heap_malloc(ctx, n);
}

static void *heap_calloc(void *ctx, size_t nelem, size_t elsize)
{
    return sand_worker_heap_calloc(ctx, nelem, elsize);
}

static void *heap_realloc(void *ctx, void *p, size_t n)
{
    return sand_worker_heap_realloc(ctx, p, n);
}

static void heap_free(void *ctx, void *p)
{
    sand_worker_heap_free(ctx, p);
}

static void use_instance_heap(void)
{
    static const PyMemAllocatorDomain domains[3] = {PYMEM_DOMAIN_RAW, PYMEM_DOMAIN_MEM,
                                                    PYMEM_DOMAIN_OBJ};
    if (!sand_worker_heap_ready())
        return;
    for (int i = 0; i < 3; i++) {
        PyMem_GetAllocator(domains[i], &orig_alloc[i]);
        heap_fb[i] =
            (sand_heap_fallback_t){&orig_alloc[i], fb_malloc, fb_calloc, fb_realloc, fb_free, NULL};
    }
    /* Only raw blocks are known to come from malloc; pymalloc cannot tell a block's size. */
    heap_fb[0].usable = fb_usable;
    for (int i = 0; i < 3; i++) {
        PyMemAllocatorEx a = {&heap_fb[i], heap_malloc, heap_calloc, heap_realloc, heap_free};
        PyMem_SetAllocator(domains[i], &a);
    }
}

static void py_after_fork(void *state, bool child)
{
    (void)state;
    if (child)
        PyOS_AfterFork_Child();
    else
        PyOS_AfterFork_Parent();
}

static void py_instance_start(void *state)
{
    (void)state;
    use_instance_heap();
}

/* Flushes sys.stdout and sys.stderr if the handler replaced them: the streams the worker set
 * up write through to their pipes, and calling their flush() in each instance ran the io
 * module's code for nothing (about ten copy-on-write faults). */
static void flush_stdio(py_state_t *st)
{
    PyObject *out = PySys_GetObject("stdout"), *err = PySys_GetObject("stderr");
    PyObject *r;
    if (out && out != st->stdout_orig && (r = PyObject_CallMethod(out, "flush", NULL)))
        Py_DECREF(r);
    if (err && err != st->stderr_orig && (r = PyObject_CallMethod(err, "flush", NULL)))
        Py_DECREF(r);
    PyErr_Clear();
}

static void py_invoke(void *state, sand_context *ctx, const sand_event *ev)
{
    py_state_t *st = state;
    PyObject *event = json_decode(st->json_loads, ev->data, ev->len);
    if (!event) {
        sand_worker_ctx_started(ctx);
        sand_worker_ctx_finished(ctx);
        report_exception(st, ctx, NULL, NULL);
        return;
    }
    ContextObject *co = PyObject_New(ContextObject, &ContextType);
    if (!co) {
        Py_DECREF(event);
        report_exception(st, ctx, NULL, NULL);
        return;
    }
    co->ctx = ctx;
    co->json_dumps = Py_NewRef(st->json_dumps);
    sand_worker_ctx_started(ctx);
    PyObject *args[2] = {event, (PyObject *)co};
    PyObject *result = PyObject_Vectorcall(st->handler, args, 2, NULL);
    sand_worker_ctx_finished(ctx);
    co->ctx = NULL;
    Py_DECREF(event);
    PyObject *text = result ? json_encode(st->json_dumps, result) : NULL;
    Py_XDECREF(result);
    Py_ssize_t len;
    const char *s = text ? PyUnicode_AsUTF8AndSize(text, &len) : NULL;
    if (s)
        sand_worker_ctx_output(ctx, s, (size_t)len);
    else
        report_exception(st, ctx, NULL, NULL);
    Py_XDECREF(text);
    Py_DECREF(co);
    flush_stdio(st);
}

static void py_unload(void *state)
{
    py_state_t *st = state;
    Py_XDECREF(st->handler);
    Py_XDECREF(st->json_loads);
    Py_XDECREF(st->json_dumps);
    Py_XDECREF(st->format_exception);
    Py_XDECREF(st->gc_freeze);
    Py_XDECREF(st->stdout_orig);
    Py_XDECREF(st->stderr_orig);
    free(st);
    if (Py_IsInitialized())
        Py_FinalizeEx();
}

const sand_worker_runtime_t sand_python_runtime = {
    .name = "python",
    .load_error_type = "ImportError",
    .load = py_load,
    .before_fork = py_before_fork,
    .after_fork = py_after_fork,
    .instance_start = py_instance_start,
    .invoke = py_invoke,
    .unload = py_unload,
};
