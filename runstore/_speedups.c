/* runstore._speedups: the metrics hot path and its conversion to columns, in C.
 *
 * Optional: runstore works the same without it (RUNSTORE_PURE_PYTHON=1, or a machine
 * without a C compiler), only slower; tests run both ways. Two pieces:
 *
 * MetricsRecorder  what `set_metrics` is bound to: checks, copies the dict, takes a seq
 *                  and the time, and appends the flat record (ts_ns, seq, category,
 *                  values) to the writer's list, all under the GIL in one C call. Any
 *                  other call (a value that is not a float, keywords, a finished logger)
 *                  goes to the Python method, which says what was wrong.
 * count_rows / fill_float_rows
 *                  the writer's (and a reader's) side: a batch of all-float records as
 *                  the columns of the metrics table (one row per key of a call), written
 *                  straight into buffers the caller allocated from Arrow's memory pool.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* Fields of a flat metrics record, in RECORD_FIELDS order. */
#define FIELDS 4

/* -- MetricsRecorder ----------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    PyObject *records;  /* list: the writer's flat buffer of all-float records */
    PyObject *seq;      /* iterator of ints: the writer's sequence numbers */
    PyObject *wake;     /* callable: ask the writer for an early write */
    PyObject *fallback; /* callable with set_metrics' signature: every other call */
    unsigned long long wake_mask;
    int open;
} Recorder;

static int
all_floats(PyObject *dict)
{
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(dict, &pos, &key, &value)) {
        if (!PyFloat_CheckExact(value)) {
            return 0;
        }
    }
    return 1;
}

static PyObject *
recorder_vectorcall(PyObject *op, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Recorder *self = (Recorder *)op;
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs != 2 || kwnames != NULL || !self->open) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    PyObject *value = args[0], *category = args[1];
    if (!PyDict_CheckExact(value) || !PyUnicode_CheckExact(category)
        || PyUnicode_GET_LENGTH(category) == 0 || !all_floats(value)) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    /* The job may change its dict later; the record must not change. */
    PyObject *copy = PyDict_Copy(value);
    if (copy == NULL) {
        return NULL;
    }
    PyObject *seq = PyIter_Next(self->seq);
    if (seq == NULL) {
        Py_DECREF(copy);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "runstore: the writer's sequence ended");
        }
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    PyObject *ts = PyLong_FromLongLong((long long)now.tv_sec * 1000000000LL + now.tv_nsec);
    if (ts == NULL) {
        Py_DECREF(copy);
        Py_DECREF(seq);
        return NULL;
    }
    PyObject *fields[FIELDS] = {ts, seq, category, copy};
    Py_ssize_t start = PyList_GET_SIZE(self->records);
    for (int i = 0; i < FIELDS; i++) {
        if (PyList_Append(self->records, fields[i]) < 0) {
            /* Whole records only: the writer slices the list FIELDS items at a time. */
#if PY_VERSION_HEX >= 0x030C0000
            PyObject *raised = PyErr_GetRaisedException();
            PyList_SetSlice(self->records, start, PyList_GET_SIZE(self->records), NULL);
            PyErr_SetRaisedException(raised);
#else
            PyObject *type, *val, *tb;
            PyErr_Fetch(&type, &val, &tb);
            PyList_SetSlice(self->records, start, PyList_GET_SIZE(self->records), NULL);
            PyErr_Restore(type, val, tb);
#endif
            Py_DECREF(ts);
            Py_DECREF(seq);
            Py_DECREF(copy);
            return NULL;
        }
    }
    unsigned long long number = PyLong_AsUnsignedLongLongMask(seq);
    Py_DECREF(ts);
    Py_DECREF(seq);
    Py_DECREF(copy);
    if (number == (unsigned long long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    if ((number & self->wake_mask) == 0) {
        PyObject *result = PyObject_CallNoArgs(self->wake);
        if (result == NULL) {
            return NULL;
        }
        Py_DECREF(result);
    }
    Py_RETURN_NONE;
}

static PyObject *
recorder_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *names[] = {"records", "seq", "wake", "fallback", "wake_mask", NULL};
    PyObject *records, *seq, *wake, *fallback;
    unsigned long long wake_mask;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOK:MetricsRecorder", names,
                                     &PyList_Type, &records, &seq, &wake, &fallback,
                                     &wake_mask)) {
        return NULL;
    }
    if (!PyIter_Check(seq) || !PyCallable_Check(wake) || !PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError,
                        "MetricsRecorder needs an iterator `seq` and callables `wake`, `fallback`");
        return NULL;
    }
    Recorder *self = (Recorder *)type->tp_alloc(type, 0);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = recorder_vectorcall;
    self->records = Py_NewRef(records);
    self->seq = Py_NewRef(seq);
    self->wake = Py_NewRef(wake);
    self->fallback = Py_NewRef(fallback);
    self->wake_mask = wake_mask;
    self->open = 1;
    return (PyObject *)self;
}

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->records);
    Py_VISIT(self->seq);
    Py_VISIT(self->wake);
    Py_VISIT(self->fallback);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
    Py_CLEAR(self->records);
    Py_CLEAR(self->seq);
    Py_CLEAR(self->wake);
    Py_CLEAR(self->fallback);
    return 0;
}

static void
recorder_dealloc(Recorder *self)
{
    PyObject_GC_UnTrack(self);
    recorder_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *
recorder_close(Recorder *self, PyObject *Py_UNUSED(ignored))
{
    self->open = 0;
    Py_RETURN_NONE;
}

static PyMethodDef recorder_methods[] = {
    {"close", (PyCFunction)recorder_close, METH_NOARGS,
     "Send every later call to the fallback (which refuses it: the logger finished)."},
    {NULL, NULL, 0, NULL},
};

static PyObject *
recorder_get_open(Recorder *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->open);
}

static PyGetSetDef recorder_getset[] = {
    {"open", (getter)recorder_get_open, NULL, "Whether calls are still recorded here.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyObject *
recorder_repr(Recorder *self)
{
    return PyUnicode_FromFormat("<runstore MetricsRecorder%s>", self->open ? "" : " (closed)");
}

static PyTypeObject RecorderType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runstore._speedups.MetricsRecorder",
    .tp_doc = PyDoc_STR("set_metrics(value, category=None, *, step=None): the hot path in C."),
    .tp_basicsize = sizeof(Recorder),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = recorder_new,
    .tp_dealloc = (destructor)recorder_dealloc,
    .tp_traverse = (traverseproc)recorder_traverse,
    .tp_clear = (inquiry)recorder_clear,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(Recorder, vectorcall),
    .tp_methods = recorder_methods,
    .tp_getset = recorder_getset,
    .tp_repr = (reprfunc)recorder_repr,
};

/* -- the writer's side --------------------------------------------------------------- */

static PyObject *
count_rows(PyObject *Py_UNUSED(module), PyObject *values)
{
    if (!PyList_Check(values)) {
        PyErr_SetString(PyExc_TypeError, "values must be a list");
        return NULL;
    }
    Py_ssize_t rows = 0;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(values); i++) {
        PyObject *record = PyList_GET_ITEM(values, i);
        if (!PyDict_Check(record)) {
            Py_RETURN_NONE;
        }
        rows += PyDict_GET_SIZE(record);
    }
    return PyLong_FromSsize_t(rows);
}

/* Code of `name` in `codes` (a dict name -> int, `names` the list in code order), added
 * if new; -1 with an error set. */
static int32_t
code_of(PyObject *codes, PyObject *names, PyObject *name)
{
    PyObject *found = PyDict_GetItemWithError(codes, name);
    if (found != NULL) {
        return (int32_t)PyLong_AsLong(found);
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    Py_ssize_t code = PyList_GET_SIZE(names);
    PyObject *number = PyLong_FromSsize_t(code);
    if (number == NULL) {
        return -1;
    }
    int failed = PyDict_SetItem(codes, name, number) < 0 || PyList_Append(names, name) < 0;
    Py_DECREF(number);
    return failed ? -1 : (int32_t)code;
}

typedef struct {
    Py_buffer view;
    int held;
} Out;

static int
out_get(Out *out, PyObject *object, Py_ssize_t size, const char *what)
{
    if (PyObject_GetBuffer(object, &out->view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS) < 0) {
        return -1;
    }
    out->held = 1;
    if (out->view.len < size) {
        PyErr_Format(PyExc_ValueError, "buffer %s holds %zd bytes, %zd needed", what,
                     out->view.len, size);
        return -1;
    }
    return 0;
}

static PyObject *
fill_float_rows(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *ts_list, *seq_list, *category_list, *values_list;
    PyObject *ts_obj, *seq_obj, *value_obj, *key_obj, *category_obj;
    Py_ssize_t rows;
    if (!PyArg_ParseTuple(args, "O!O!O!O!nOOOOO:fill_float_rows", &PyList_Type, &ts_list,
                          &PyList_Type, &seq_list, &PyList_Type, &category_list, &PyList_Type,
                          &values_list, &rows, &ts_obj, &seq_obj, &value_obj, &key_obj,
                          &category_obj)) {
        return NULL;
    }
    Py_ssize_t records = PyList_GET_SIZE(seq_list);
    if (PyList_GET_SIZE(ts_list) != records || PyList_GET_SIZE(category_list) != records
        || PyList_GET_SIZE(values_list) != records) {
        PyErr_SetString(PyExc_ValueError, "columns of different lengths");
        return NULL;
    }
    Out ts = {0}, seq = {0}, value = {0}, key = {0}, category = {0};
    PyObject *key_codes = NULL, *keys = NULL, *category_codes = NULL, *categories = NULL;
    PyObject *result = NULL;
    if (out_get(&ts, ts_obj, rows * 8, "ts") < 0 || out_get(&seq, seq_obj, rows * 8, "seq") < 0
        || out_get(&value, value_obj, rows * 8, "value") < 0
        || out_get(&key, key_obj, rows * 4, "key") < 0
        || out_get(&category, category_obj, rows * 4, "category") < 0) {
        goto done;
    }
    key_codes = PyDict_New();
    keys = PyList_New(0);
    category_codes = PyDict_New();
    categories = PyList_New(0);
    if (!key_codes || !keys || !category_codes || !categories) {
        goto done;
    }
    int64_t *ts_out = ts.view.buf, *seq_out = seq.view.buf;
    double *value_out = value.view.buf;
    int32_t *key_out = key.view.buf, *category_out = category.view.buf;
    /* The first record's keys and codes: later records of the usual loop hold the very
     * same key objects in the same order, found without hashing. */
    PyObject *first_keys[64];
    int32_t first_codes[64];
    Py_ssize_t first_size = -1, row = 0;
    int uniform = 1, finite = 1;
    PyObject *last_category = NULL;
    int32_t last_category_code = -1;
    for (Py_ssize_t i = 0; i < records; i++) {
        PyObject *ts_ns = PyList_GET_ITEM(ts_list, i);
        PyObject *number = PyList_GET_ITEM(seq_list, i);
        PyObject *name = PyList_GET_ITEM(category_list, i);
        PyObject *values = PyList_GET_ITEM(values_list, i);
        if (!PyLong_CheckExact(ts_ns) || !PyLong_CheckExact(number) || !PyUnicode_CheckExact(name)
            || !PyDict_CheckExact(values)) {
            goto unusable;
        }
        int overflow = 0;
        long long micros = PyLong_AsLongLongAndOverflow(ts_ns, &overflow) / 1000;
        long long seq_number = overflow ? 0 : PyLong_AsLongLongAndOverflow(number, &overflow);
        if (overflow || PyErr_Occurred()) {
            goto unusable;
        }
        if (name != last_category) {
            last_category_code = code_of(category_codes, categories, name);
            if (last_category_code < 0) {
                goto done;
            }
            last_category = name;
        }
        Py_ssize_t size = PyDict_GET_SIZE(values);
        if (row + size > rows) {
            PyErr_SetString(PyExc_ValueError, "more rows than count_rows said: records changed");
            goto done;
        }
        if (first_size < 0) {
            first_size = size;
        }
        else if (size != first_size) {
            uniform = 0;
        }
        Py_ssize_t pos = 0, j = 0;
        PyObject *k, *v;
        while (PyDict_Next(values, &pos, &k, &v)) {
            if (!PyFloat_CheckExact(v) || !PyUnicode_CheckExact(k)) {
                goto unusable;
            }
            int32_t code;
            if (i == 0 && j < 64) {
                code = code_of(key_codes, keys, k);
                first_keys[j] = k;
                first_codes[j] = code;
            }
            else if (j < first_size && j < 64 && first_keys[j] == k) {
                code = first_codes[j];
            }
            else {
                code = code_of(key_codes, keys, k);
            }
            if (code < 0) {
                goto done;
            }
            if (code != j) {
                uniform = 0;
            }
            double x = PyFloat_AS_DOUBLE(v);
            finite &= isfinite(x) != 0;
            ts_out[row] = micros;
            seq_out[row] = seq_number;
            value_out[row] = x;
            key_out[row] = code;
            category_out[row] = last_category_code;
            row++;
            j++;
        }
    }
    if (row != rows) {
        PyErr_SetString(PyExc_ValueError, "fewer rows than count_rows said: records changed");
        goto done;
    }
    if (PyList_GET_SIZE(categories) != 1) {
        uniform = 0;
    }
    result = Py_BuildValue("(OONN)", keys, categories, PyBool_FromLong(uniform),
                           PyBool_FromLong(finite));
    goto done;
unusable:
    PyErr_Clear();
    result = Py_NewRef(Py_None);
done:
    if (ts.held) PyBuffer_Release(&ts.view);
    if (seq.held) PyBuffer_Release(&seq.view);
    if (value.held) PyBuffer_Release(&value.view);
    if (key.held) PyBuffer_Release(&key.view);
    if (category.held) PyBuffer_Release(&category.view);
    Py_XDECREF(key_codes);
    Py_XDECREF(keys);
    Py_XDECREF(category_codes);
    Py_XDECREF(categories);
    return result;
}

static PyMethodDef module_methods[] = {
    {"count_rows", count_rows, METH_O,
     "count_rows(values) -> rows of the metrics table of a values column (keys over all "
     "calls), or None if one is not a dict."},
    {"fill_float_rows", fill_float_rows, METH_VARARGS,
     "fill_float_rows(ts_ns, seq, category, values, rows, ts, seq, value, key, category) -> "
     "(keys, categories, uniform, finite), or None if a record is not all floats under "
     "string keys.\n\n"
     "Reads the columns of a metrics batch (lists) and "
     "Writes one row per key of each call into the writable buffers: ts (int64 "
     "microseconds), seq (int64), value (float64), key and category (int32 codes into keys "
     "and categories). uniform: one category, and every call the keys of the first in its "
     "order; finite: no NaN or infinity."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "runstore._speedups",
    .m_doc = "The metrics hot path and its conversion to columns, in C (optional).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__speedups(void)
{
    if (PyType_Ready(&RecorderType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "MetricsRecorder", (PyObject *)&RecorderType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
