/* runstore._speedups: the metrics hot path and the writer's work on it, in C.
 *
 * Optional: runstore works the same without it (RUNSTORE_PURE_PYTHON=1, or a machine
 * without a C compiler), only slower; tests run both ways and compare.
 *
 * MetricsRecorder  what `set_metrics` is bound to. A call whose values are all numbers
 *                  (floats, ints a float64 holds exactly, bools) under str keys goes into
 *                  a MetricsBuffer: time, seq, category, a keys tuple shared with the call
 *                  before when alike, the values in C. No Python object is made per
 *                  call, so nothing is left for the GC or the allocator to handle later.
 *                  Any other call (a str or other value, keywords, a finished logger)
 *                  goes to the Python method.
 * MetricsBuffer    C arrays of such calls. The writer takes a batch (the arrays move,
 *                  and come back for reuse when the batch is done) and makes, each in
 *                  one pass: the Arrow columns of the metrics table (`fill`), the live
 *                  segment's JSONL lines (`lines`: orjson formats the floats, C writes
 *                  the rest), the newest values (`last`), or Python columns (`columns`).
 * count_rows / fill_float_rows
 *                  the same Arrow columns from Python columns: records read back from a
 *                  live segment, or logged through the Python method.
 *
 * Everything runs holding the GIL, which orders appends and takes.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

/* -- shared by the fills ------------------------------------------------------------- */

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

/* What a fill writes: six writable buffers of `rows` items (ts and seq int64, value
 * float64, key, category and kind int32 codes) and the keys and categories named. */
#define FILL_OUTS 6
typedef struct {
    Out outs[FILL_OUTS];
    PyObject *key_codes, *keys, *category_codes, *categories;
} Fill;

static int
fill_open(Fill *fill, PyObject *const *buffers, Py_ssize_t rows)
{
    static const char *what[FILL_OUTS] = {"ts", "seq", "value", "key", "category", "kind"};
    static const int width[FILL_OUTS] = {8, 8, 8, 4, 4, 4};
    memset(fill, 0, sizeof(*fill));
    for (int i = 0; i < FILL_OUTS; i++) {
        if (out_get(&fill->outs[i], buffers[i], rows * width[i], what[i]) < 0) {
            return -1;
        }
    }
    fill->key_codes = PyDict_New();
    fill->keys = PyList_New(0);
    fill->category_codes = PyDict_New();
    fill->categories = PyList_New(0);
    return fill->key_codes && fill->keys && fill->category_codes && fill->categories ? 0 : -1;
}

/* (keys, categories, uniform, finite); uniform needs one category too. */
static PyObject *
fill_result(Fill *fill, int uniform, int finite)
{
    uniform &= PyList_GET_SIZE(fill->categories) == 1;
    return Py_BuildValue("(OONN)", fill->keys, fill->categories, PyBool_FromLong(uniform),
                         PyBool_FromLong(finite));
}

static void
fill_close(Fill *fill)
{
    for (int i = 0; i < FILL_OUTS; i++) {
        if (fill->outs[i].held) {
            PyBuffer_Release(&fill->outs[i].view);
        }
    }
    Py_XDECREF(fill->key_codes);
    Py_XDECREF(fill->keys);
    Py_XDECREF(fill->category_codes);
    Py_XDECREF(fill->categories);
}

/* -- MetricsBuffer ------------------------------------------------------------------- */

/* A call with more keys than this goes to the Python method (rare; still recorded). */
#define MAX_KEYS 64
/* Kinds of values kept in C: codes into the `kind` names the Python side gives Arrow
 * (runstore/_native.py). Ints only where a float64 holds them exactly (|i| <= 2^53):
 * larger ones need the `text` column, the Python method's job. */
enum { KIND_FLOAT = 0, KIND_INT = 1, KIND_BOOL = 2 };
#define EXACT_INT (1LL << 53)

typedef union {
    double f;  /* KIND_FLOAT */
    int64_t i; /* KIND_INT, KIND_BOOL (0 or 1) */
} Number;
_Static_assert(sizeof(Number) == sizeof(double), "a Number array copies as doubles");
/* Values formatted by one call of the JSON encoder: its float objects stay in memory
 * that Python's allocator reuses, rather than a batch's worth of fresh pages. */
#define FLOATS_PER_DUMP 1024

typedef struct {
    Py_ssize_t capacity;       /* records */
    Py_ssize_t value_capacity; /* values */
    int64_t *ts_ns;
    int64_t *seq;
    int64_t *start;            /* index of the record's first value */
    PyObject **category;       /* strong references */
    PyObject **keys;           /* strong references to tuples, shared by calls alike */
    Number *values;
    uint8_t *kinds;            /* KIND_* of each value */
} Arrays;

typedef struct Buffer {
    PyObject_HEAD
    Arrays a;
    Py_ssize_t count;
    Py_ssize_t value_count;
    int uniform;   /* every record has the first one's category and keys objects */
    int finite;    /* no float is NaN or infinite */
    int all_float; /* every value a float */
    /* The buffer this batch was taken from (strong reference; NULL for the live one):
     * it gets the arrays back for its next batch, so steady logging touches no fresh
     * memory (a page fault costs ~4 µs on a VM). */
    struct Buffer *origin;
    Arrays spare;
    char *scratch; /* where lines() builds a line (the live buffer's, reused) */
    Py_ssize_t scratch_capacity;
} Buffer;

static PyTypeObject BufferType;

static void
arrays_free(Arrays *a)
{
    PyMem_Free(a->ts_ns);
    PyMem_Free(a->seq);
    PyMem_Free(a->start);
    PyMem_Free(a->category);
    PyMem_Free(a->keys);
    PyMem_Free(a->values);
    PyMem_Free(a->kinds);
    memset(a, 0, sizeof(*a));
}

static int
grow(void **array, Py_ssize_t size, Py_ssize_t count)
{
    void *grown = PyMem_Realloc(*array, (size_t)(size * count));
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    *array = grown;
    return 0;
}

/* Room for `records` records and `values` values in all; -1 with MemoryError. */
static int
arrays_reserve(Arrays *a, Py_ssize_t records, Py_ssize_t values)
{
    if (records > a->capacity) {
        Py_ssize_t capacity = a->capacity ? a->capacity : 1024;
        while (capacity < records) {
            capacity *= 2;
        }
        if (grow((void **)&a->ts_ns, sizeof(int64_t), capacity) < 0
            || grow((void **)&a->seq, sizeof(int64_t), capacity) < 0
            || grow((void **)&a->start, sizeof(int64_t), capacity) < 0
            || grow((void **)&a->category, sizeof(PyObject *), capacity) < 0
            || grow((void **)&a->keys, sizeof(PyObject *), capacity) < 0) {
            return -1;
        }
        a->capacity = capacity;
    }
    if (values > a->value_capacity) {
        Py_ssize_t capacity = a->value_capacity ? a->value_capacity : 4096;
        while (capacity < values) {
            capacity *= 2;
        }
        if (grow((void **)&a->values, sizeof(Number), capacity) < 0
            || grow((void **)&a->kinds, sizeof(uint8_t), capacity) < 0) {
            return -1;
        }
        a->value_capacity = capacity;
    }
    return 0;
}

static void
buffer_forget_records(Buffer *self)
{
    for (Py_ssize_t i = 0; i < self->count; i++) {
        Py_CLEAR(self->a.category[i]);
        Py_CLEAR(self->a.keys[i]);
    }
    self->count = 0;
    self->value_count = 0;
    self->uniform = 1;
    self->finite = 1;
    self->all_float = 1;
}

static Buffer *
buffer_alloc(void)
{
    Buffer *self = PyObject_New(Buffer, &BufferType);
    if (self == NULL) {
        return NULL;
    }
    memset(&self->a, 0, sizeof(Arrays));
    memset(&self->spare, 0, sizeof(Arrays));
    self->count = 0;
    self->value_count = 0;
    self->uniform = 1;
    self->finite = 1;
    self->all_float = 1;
    self->origin = NULL;
    self->scratch = NULL;
    self->scratch_capacity = 0;
    return self;
}

static PyObject *
buffer_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) || (kwargs != NULL && PyDict_GET_SIZE(kwargs))) {
        PyErr_SetString(PyExc_TypeError, "MetricsBuffer() takes no arguments");
        return NULL;
    }
    return (PyObject *)buffer_alloc();
}

static void
buffer_dealloc(Buffer *self)
{
    buffer_forget_records(self);
    Buffer *origin = self->origin;
    if (origin != NULL && origin->spare.capacity == 0) {
        origin->spare = self->a; /* reused by the live buffer's next batch */
    }
    else {
        arrays_free(&self->a);
    }
    arrays_free(&self->spare);
    PyMem_Free(self->scratch);
    Py_XDECREF(origin);
    PyObject_Free(self);
}

/* Append a call (checked by the caller): its `n` values in the order of `keys`, its keys
 * tuple (a new reference, stolen). -1 with an error set. */
static int
buffer_append(Buffer *self, int64_t ts_ns, int64_t seq, PyObject *category, PyObject *keys,
              const Number *values, const uint8_t *kinds, Py_ssize_t n)
{
    if (arrays_reserve(&self->a, self->count + 1, self->value_count + n) < 0) {
        Py_DECREF(keys);
        return -1;
    }
    Py_ssize_t i = self->count;
    self->a.ts_ns[i] = ts_ns;
    self->a.seq[i] = seq;
    self->a.start[i] = self->value_count;
    self->a.category[i] = Py_NewRef(category);
    self->a.keys[i] = keys;
    memcpy(self->a.values + self->value_count, values, (size_t)n * sizeof(Number));
    memcpy(self->a.kinds + self->value_count, kinds, (size_t)n);
    for (Py_ssize_t j = 0; j < n; j++) {
        if (kinds[j] == KIND_FLOAT) {
            self->finite &= isfinite(values[j].f) != 0;
        }
        else {
            self->all_float = 0;
        }
    }
    if (i > 0 && (category != self->a.category[0] || keys != self->a.keys[0])) {
        self->uniform = 0;
    }
    self->count++;
    self->value_count += n;
    return 0;
}

static Py_ssize_t
buffer_length(Buffer *self)
{
    return self->count;
}

static PyObject *
buffer_take(Buffer *self, PyObject *Py_UNUSED(ignored))
{
    Buffer *batch = buffer_alloc();
    if (batch == NULL) {
        return NULL;
    }
    batch->a = self->a;
    batch->count = self->count;
    batch->value_count = self->value_count;
    batch->uniform = self->uniform;
    batch->finite = self->finite;
    batch->all_float = self->all_float;
    batch->origin = (Buffer *)Py_NewRef(self);
    self->a = self->spare;
    memset(&self->spare, 0, sizeof(Arrays));
    self->count = 0;
    self->value_count = 0;
    self->uniform = 1;
    self->finite = 1;
    self->all_float = 1;
    return (PyObject *)batch;
}

static PyObject *
buffer_clear(Buffer *self, PyObject *Py_UNUSED(ignored))
{
    buffer_forget_records(self);
    Py_RETURN_NONE;
}

static PyObject *
record_dict(Buffer *self, Py_ssize_t i)
{
    PyObject *keys = self->a.keys[i];
    Py_ssize_t n = PyTuple_GET_SIZE(keys);
    PyObject *dict = PyDict_New();
    if (dict == NULL) {
        return NULL;
    }
    for (Py_ssize_t j = 0; j < n; j++) {
        /* Read afresh: a collection run by an allocation may let another thread append
         * to a live buffer, moving its arrays. */
        Py_ssize_t at = self->a.start[i] + j;
        Number value = self->a.values[at];
        uint8_t kind = self->a.kinds[at];
        PyObject *number = kind == KIND_FLOAT ? PyFloat_FromDouble(value.f)
                           : kind == KIND_INT ? PyLong_FromLongLong(value.i)
                                              : PyBool_FromLong((long)value.i);
        if (number == NULL || PyDict_SetItem(dict, PyTuple_GET_ITEM(keys, j), number) < 0) {
            Py_XDECREF(number);
            Py_DECREF(dict);
            return NULL;
        }
        Py_DECREF(number);
    }
    return dict;
}

static PyObject *
buffer_columns(Buffer *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t n = self->count;
    PyObject *ts = PyList_New(n), *seq = PyList_New(n), *category = PyList_New(n);
    PyObject *values = PyList_New(n);
    if (!ts || !seq || !category || !values) {
        goto fail;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *t = PyLong_FromLongLong(self->a.ts_ns[i]);
        PyObject *s = PyLong_FromLongLong(self->a.seq[i]);
        PyObject *d = record_dict(self, i);
        if (!t || !s || !d) {
            Py_XDECREF(t);
            Py_XDECREF(s);
            Py_XDECREF(d);
            goto fail;
        }
        PyList_SET_ITEM(ts, i, t);
        PyList_SET_ITEM(seq, i, s);
        PyList_SET_ITEM(category, i, Py_NewRef(self->a.category[i]));
        PyList_SET_ITEM(values, i, d);
    }
    return Py_BuildValue("(NNNN)", ts, seq, category, values);
fail:
    Py_XDECREF(ts);
    Py_XDECREF(seq);
    Py_XDECREF(category);
    Py_XDECREF(values);
    return NULL;
}

static PyObject *
buffer_last(Buffer *self, PyObject *Py_UNUSED(ignored))
{
    if (self->count == 0) {
        Py_RETURN_NONE;
    }
    Py_ssize_t i = self->count - 1;
    PyObject *dict = record_dict(self, i);
    if (dict == NULL) {
        return NULL;
    }
    return Py_BuildValue("(LON)", (long long)self->a.seq[i], self->a.category[i], dict);
}

static PyObject *
buffer_fill(Buffer *self, PyObject *args)
{
    PyObject *buffers[FILL_OUTS];
    if (!PyArg_ParseTuple(args, "OOOOOO:fill", &buffers[0], &buffers[1], &buffers[2],
                          &buffers[3], &buffers[4], &buffers[5])) {
        return NULL;
    }
    Fill fill;
    PyObject *result = NULL;
    if (fill_open(&fill, buffers, self->value_count) < 0) {
        goto done;
    }
    int64_t *ts_out = fill.outs[0].view.buf, *seq_out = fill.outs[1].view.buf;
    double *value_out = fill.outs[2].view.buf;
    int32_t *key_out = fill.outs[3].view.buf, *category_out = fill.outs[4].view.buf;
    int32_t *kind_out = fill.outs[5].view.buf;
    if (self->all_float) { /* the usual batch: the doubles as they are */
        memcpy(value_out, self->a.values, (size_t)self->value_count * sizeof(double));
        memset(kind_out, 0, (size_t)self->value_count * sizeof(int32_t));
    }
    else {
        for (Py_ssize_t at = 0; at < self->value_count; at++) {
            Number value = self->a.values[at];
            uint8_t kind = self->a.kinds[at];
            value_out[at] = kind == KIND_FLOAT ? value.f : (double)value.i;
            kind_out[at] = kind;
        }
    }
    PyObject *last_keys = NULL, *last_category = NULL;
    int32_t codes[MAX_KEYS], category_code = 0;
    int uniform = 1;
    Py_ssize_t row = 0;
    for (Py_ssize_t i = 0; i < self->count; i++) {
        PyObject *record_keys = self->a.keys[i];
        Py_ssize_t n = PyTuple_GET_SIZE(record_keys);
        if (record_keys != last_keys) {
            for (Py_ssize_t j = 0; j < n; j++) {
                codes[j] = code_of(fill.key_codes, fill.keys, PyTuple_GET_ITEM(record_keys, j));
                if (codes[j] < 0) {
                    goto done;
                }
                uniform &= codes[j] == j;
            }
            if (last_keys != NULL && n != PyTuple_GET_SIZE(last_keys)) {
                uniform = 0;
            }
            last_keys = record_keys;
        }
        if (self->a.category[i] != last_category) {
            last_category = self->a.category[i];
            category_code = code_of(fill.category_codes, fill.categories, last_category);
            if (category_code < 0) {
                goto done;
            }
        }
        int64_t micros = self->a.ts_ns[i] / 1000;
        for (Py_ssize_t j = 0; j < n; j++, row++) {
            ts_out[row] = micros;
            seq_out[row] = self->a.seq[i];
            key_out[row] = codes[j];
            category_out[row] = category_code;
        }
    }
    result = fill_result(&fill, uniform, self->finite);
done:
    fill_close(&fill);
    return result;
}

/* -- JSON lines ---------------------------------------------------------------------- */

/* A line is built in the live buffer's scratch space (reused: no fresh pages), through
 * a cursor: `room` first, then unchecked writes. */
typedef struct {
    Buffer *owner;
    char *at;
} Line;

static int
room(Line *line, Py_ssize_t more)
{
    Buffer *owner = line->owner;
    Py_ssize_t used = owner->scratch ? line->at - owner->scratch : 0;
    if (used + more <= owner->scratch_capacity) {
        return 0;
    }
    Py_ssize_t capacity = owner->scratch_capacity ? owner->scratch_capacity : 65536;
    while (capacity < used + more) {
        capacity *= 2;
    }
    char *grown = PyMem_Realloc(owner->scratch, (size_t)capacity);
    if (grown == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    owner->scratch = grown;
    owner->scratch_capacity = capacity;
    line->at = grown + used;
    return 0;
}

static inline void
put(Line *line, const char *text, Py_ssize_t size)
{
    memcpy(line->at, text, (size_t)size);
    line->at += size;
}

static const char TWO_DIGITS[] = "00010203040506070809101112131415161718192021222324252627282930313233"
                                 "34353637383940414243444546474849505152535455565758596061626364656667"
                                 "6869707172737475767778798081828384858687888990919293949596979899";

/* Room for it first: at most 20 bytes. */
static inline void
put_int(Line *line, int64_t number)
{
    char digits[24], *end = digits + sizeof(digits), *at = end;
    uint64_t rest = number < 0 ? (uint64_t)0 - (uint64_t)number : (uint64_t)number;
    while (rest >= 100) {
        unsigned pair = (unsigned)(rest % 100) * 2;
        rest /= 100;
        *--at = TWO_DIGITS[pair + 1];
        *--at = TWO_DIGITS[pair];
    }
    if (rest >= 10) {
        *--at = TWO_DIGITS[rest * 2 + 1];
        *--at = TWO_DIGITS[rest * 2];
    }
    else {
        *--at = (char)('0' + rest);
    }
    if (number < 0) {
        *--at = '-';
    }
    put(line, at, end - at);
}

/* `head` (the opening of a field, say `{"ts_ns":[`), then the numbers with commas. */
static int
put_int_column(Line *line, const char *head, const int64_t *numbers, Py_ssize_t count)
{
    Py_ssize_t size = (Py_ssize_t)strlen(head);
    if (room(line, size) < 0) {
        return -1;
    }
    put(line, head, size);
    for (Py_ssize_t i = 0; i < count; i++) {
        if (room(line, 24) < 0) {
            return -1;
        }
        if (i > 0) {
            *line->at++ = ',';
        }
        put_int(line, numbers[i]);
    }
    return 0;
}

/* Longest text orjson gives a finite double ("-2.2250738585072014e-308"), with room. */
#define MAX_FLOAT_TEXT 32

/* The JSON text of `name` (orjson's), cached in `cache` by object. Borrowed. */
static PyObject *
json_of(PyObject *cache, PyObject *dumps, PyObject *name)
{
    PyObject *found = PyDict_GetItemWithError(cache, name);
    if (found != NULL || PyErr_Occurred()) {
        return found;
    }
    PyObject *text = PyObject_CallOneArg(dumps, name);
    if (text == NULL) {
        return NULL;
    }
    if (!PyBytes_Check(text)) {
        Py_DECREF(text);
        PyErr_SetString(PyExc_TypeError, "dumps must return bytes");
        return NULL;
    }
    int failed = PyDict_SetItem(cache, name, text) < 0;
    Py_DECREF(text);
    return failed ? NULL : text;
}

/* The floats of a batch, formatted by `dumps` (orjson: shortest round-trip text) a
 * FLOATS_PER_DUMP at a time and handed out one by one, in order. */
typedef struct {
    Buffer *batch;
    PyObject *dumps;
    Py_ssize_t scan; /* index of the next value to look at for floats */
    PyObject *text;  /* the current dump: "[v,v,...]" */
    const char *at;  /* where its next value starts */
} Floats;

static int
floats_next(Floats *v, const char **token, Py_ssize_t *size)
{
    if (v->text == NULL || *v->at == ']') {
        Py_CLEAR(v->text);
        Buffer *batch = v->batch;
        Py_ssize_t count = 0, stop = v->scan;
        while (stop < batch->value_count && count < FLOATS_PER_DUMP) {
            count += batch->a.kinds[stop++] == KIND_FLOAT;
        }
        if (count == 0) {
            PyErr_SetString(PyExc_RuntimeError, "runstore: ran out of metric values");
            return -1;
        }
        PyObject *numbers = PyList_New(count);
        if (numbers == NULL) {
            return -1;
        }
        for (Py_ssize_t at = v->scan, j = 0; at < stop; at++) {
            if (batch->a.kinds[at] != KIND_FLOAT) {
                continue;
            }
            PyObject *number = PyFloat_FromDouble(batch->a.values[at].f);
            if (number == NULL) {
                Py_DECREF(numbers);
                return -1;
            }
            PyList_SET_ITEM(numbers, j++, number);
        }
        v->scan = stop;
        v->text = PyObject_CallOneArg(v->dumps, numbers);
        Py_DECREF(numbers);
        if (v->text == NULL) {
            return -1;
        }
        if (!PyBytes_Check(v->text) || PyBytes_GET_SIZE(v->text) < 2
            || PyBytes_AS_STRING(v->text)[0] != '[') {
            PyErr_SetString(PyExc_TypeError, "dumps must return a JSON array as bytes");
            return -1;
        }
        v->at = PyBytes_AS_STRING(v->text) + 1;
    }
    const char *end = v->at;
    while (*end != ',' && *end != ']') { /* bytes objects end in a NUL: stops there too */
        if (*end == '\0') {
            PyErr_SetString(PyExc_ValueError, "dumps returned a truncated array");
            return -1;
        }
        end++;
    }
    *token = v->at;
    *size = end - v->at;
    v->at = *end == ',' ? end + 1 : end;
    return 0;
}

static PyObject *
buffer_lines(Buffer *self, PyObject *args)
{
    PyObject *dumps;
    Py_ssize_t per_line;
    if (!PyArg_ParseTuple(args, "On:lines", &dumps, &per_line)) {
        return NULL;
    }
    if (per_line < 1) {
        PyErr_SetString(PyExc_ValueError, "records per line must be at least 1");
        return NULL;
    }
    if (!self->finite) {
        Py_RETURN_NONE; /* NaN and infinities need the `special` column: orjson's path */
    }
    PyObject *lines = PyList_New(0), *key_cache = PyDict_New(), *category_cache = PyDict_New();
    PyObject *result = NULL;
    Floats floats = {self, dumps, 0, NULL, NULL};
    Line line = {self->origin != NULL ? self->origin : self, NULL};
    if (!lines || !key_cache || !category_cache) {
        goto fail;
    }
    for (Py_ssize_t first = 0; first < self->count; first += per_line) {
        Py_ssize_t last = first + per_line < self->count ? first + per_line : self->count;
        line.at = line.owner->scratch;
        if (put_int_column(&line, "{\"ts_ns\":[", self->a.ts_ns + first, last - first) < 0
            || put_int_column(&line, "],\"seq\":[", self->a.seq + first, last - first) < 0
            || room(&line, 16) < 0) {
            goto fail;
        }
        put(&line, "],\"category\":[", 14);
        PyObject *last_category = NULL, *category_text = NULL;
        for (Py_ssize_t i = first; i < last; i++) {
            if (self->a.category[i] != last_category) {
                last_category = self->a.category[i];
                category_text = json_of(category_cache, dumps, last_category);
                if (category_text == NULL) {
                    goto fail;
                }
            }
            if (room(&line, PyBytes_GET_SIZE(category_text) + 1) < 0) {
                goto fail;
            }
            if (i > first) {
                *line.at++ = ',';
            }
            put(&line, PyBytes_AS_STRING(category_text), PyBytes_GET_SIZE(category_text));
        }
        if (room(&line, 16) < 0) {
            goto fail;
        }
        put(&line, "],\"values\":[", 12);
        PyObject *last_keys = NULL, *key_texts[MAX_KEYS];
        Py_ssize_t record_room = 0;
        for (Py_ssize_t i = first; i < last; i++) {
            PyObject *keys = self->a.keys[i];
            Py_ssize_t n = PyTuple_GET_SIZE(keys);
            if (keys != last_keys) { /* texts held by key_cache */
                record_room = 3;
                for (Py_ssize_t j = 0; j < n; j++) {
                    key_texts[j] = json_of(key_cache, dumps, PyTuple_GET_ITEM(keys, j));
                    if (key_texts[j] == NULL) {
                        goto fail;
                    }
                    record_room += PyBytes_GET_SIZE(key_texts[j]) + 2 + MAX_FLOAT_TEXT;
                }
                last_keys = keys;
            }
            if (room(&line, record_room) < 0) {
                goto fail;
            }
            if (i > first) {
                *line.at++ = ',';
            }
            *line.at++ = '{';
            for (Py_ssize_t j = 0; j < n; j++) {
                Py_ssize_t at = self->a.start[i] + j;
                if (j > 0) {
                    *line.at++ = ',';
                }
                put(&line, PyBytes_AS_STRING(key_texts[j]), PyBytes_GET_SIZE(key_texts[j]));
                *line.at++ = ':';
                if (self->a.kinds[at] == KIND_INT) {
                    put_int(&line, self->a.values[at].i);
                    continue;
                }
                if (self->a.kinds[at] == KIND_BOOL) {
                    put(&line, self->a.values[at].i ? "true" : "false", self->a.values[at].i ? 4 : 5);
                    continue;
                }
                const char *token;
                Py_ssize_t size;
                if (floats_next(&floats, &token, &size) < 0) {
                    goto fail;
                }
                if (size > MAX_FLOAT_TEXT) {
                    PyErr_SetString(PyExc_ValueError, "dumps gave a float text too long");
                    goto fail;
                }
                put(&line, token, size);
            }
            *line.at++ = '}';
        }
        if (room(&line, 4) < 0) {
            goto fail;
        }
        put(&line, "]}\n", 3);
        PyObject *text = PyBytes_FromStringAndSize(line.owner->scratch, line.at - line.owner->scratch);
        if (text == NULL || PyList_Append(lines, text) < 0) {
            Py_XDECREF(text);
            goto fail;
        }
        Py_DECREF(text);
    }
    result = lines;
    lines = NULL;
fail:
    Py_XDECREF(floats.text);
    Py_XDECREF(lines);
    Py_XDECREF(key_cache);
    Py_XDECREF(category_cache);
    return result;
}

static PyObject *
buffer_get_rows(Buffer *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->value_count);
}

static PyObject *
buffer_get_uniform(Buffer *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->count > 0 && self->uniform);
}

static PyObject *
buffer_get_finite(Buffer *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->finite);
}

static PyMethodDef buffer_methods[] = {
    {"take", (PyCFunction)buffer_take, METH_NOARGS,
     "take() -> the records so far as a batch (a MetricsBuffer); this one starts empty."},
    {"clear", (PyCFunction)buffer_clear, METH_NOARGS, "Drop every record."},
    {"columns", (PyCFunction)buffer_columns, METH_NOARGS,
     "columns() -> (ts_ns, seq, category, values) lists, values as {key: value} dicts."},
    {"last", (PyCFunction)buffer_last, METH_NOARGS,
     "last() -> (seq, category, {key: value}) of the newest record, or None."},
    {"fill", (PyCFunction)buffer_fill, METH_VARARGS,
     "fill(ts, seq, value, key, category, kind) -> (keys, categories, uniform, finite): "
     "one row per key of each call into writable buffers of `rows` items: ts (int64 "
     "microseconds), seq (int64), value (float64), key, category and kind (int32 codes; "
     "kinds 0 float, 1 int, 2 bool)."},
    {"lines", (PyCFunction)buffer_lines, METH_VARARGS,
     "lines(dumps, per_line) -> JSONL lines of the records (docs/format.md), at most "
     "per_line records a line, or None if a value is NaN or infinite. `dumps` (orjson's) "
     "formats the floats and the key and category strings."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef buffer_getset[] = {
    {"rows", (getter)buffer_get_rows, NULL, "Values in all: rows of the metrics table.", NULL},
    {"uniform", (getter)buffer_get_uniform, NULL,
     "Every record the first one's category and keys (in order): its last holds the newest "
     "value of every key.",
     NULL},
    {"finite", (getter)buffer_get_finite, NULL, "No value is NaN or infinite.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods buffer_as_sequence = {
    .sq_length = (lenfunc)buffer_length,
};

static PyTypeObject BufferType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "runstore._speedups.MetricsBuffer",
    .tp_doc = PyDoc_STR("Numeric metrics calls in C arrays: what a MetricsRecorder appends to "
                        "and the writer takes batches of."),
    .tp_basicsize = sizeof(Buffer),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = buffer_new,
    .tp_dealloc = (destructor)buffer_dealloc,
    .tp_methods = buffer_methods,
    .tp_getset = buffer_getset,
    .tp_as_sequence = &buffer_as_sequence,
};

/* -- MetricsRecorder ----------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Buffer *buffer;     /* where numeric calls go */
    PyObject *seq;      /* iterator of ints: the writer's sequence numbers */
    PyObject *wake;     /* callable: ask the writer for an early write */
    PyObject *fallback; /* callable with set_metrics' signature: every other call */
    PyObject *last_keys; /* keys tuple of the previous call, shared when the next is alike */
    unsigned long long wake_mask;
    int open;
} Recorder;

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
        || PyUnicode_GET_LENGTH(category) == 0 || PyDict_GET_SIZE(value) > MAX_KEYS) {
        return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
    }
    /* One pass: every value a float, an exact int or a bool under a str key (else the
     * Python method takes the call, nothing recorded here), copied out; the keys compared
     * with the last call's. */
    Py_ssize_t n = PyDict_GET_SIZE(value), pos = 0, j = 0;
    PyObject *key, *item, *seen[MAX_KEYS];
    Number numbers[MAX_KEYS];
    uint8_t kinds[MAX_KEYS];
    PyObject *last = self->last_keys;
    int same = last != NULL && PyTuple_GET_SIZE(last) == n;
    while (PyDict_Next(value, &pos, &key, &item)) {
        if (!PyUnicode_CheckExact(key)) {
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
        if (PyFloat_CheckExact(item)) {
            numbers[j].f = PyFloat_AS_DOUBLE(item);
            kinds[j] = KIND_FLOAT;
        }
        else if (PyBool_Check(item)) {
            numbers[j].i = item == Py_True;
            kinds[j] = KIND_BOOL;
        }
        else if (PyLong_CheckExact(item)) {
            int overflow = 0;
            long long whole = PyLong_AsLongLongAndOverflow(item, &overflow);
            if (overflow || whole > EXACT_INT || whole < -EXACT_INT) {
                return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
            }
            numbers[j].i = whole;
            kinds[j] = KIND_INT;
        }
        else {
            return PyObject_Vectorcall(self->fallback, args, nargsf, kwnames);
        }
        seen[j] = key;
        if (same && PyTuple_GET_ITEM(last, j) != key) {
            same = 0;
        }
        j++;
    }
    PyObject *keys;
    if (same) {
        keys = Py_NewRef(last);
    }
    else {
        for (Py_ssize_t k = 0; k < n; k++) { /* held: a new tuple may run the GC */
            Py_INCREF(seen[k]);
        }
        keys = PyTuple_New(n);
        if (keys == NULL) {
            for (Py_ssize_t k = 0; k < n; k++) {
                Py_DECREF(seen[k]);
            }
            return NULL;
        }
        for (Py_ssize_t k = 0; k < n; k++) {
            PyTuple_SET_ITEM(keys, k, seen[k]);
        }
        Py_XSETREF(self->last_keys, Py_NewRef(keys));
    }
    PyObject *seq = PyIter_Next(self->seq);
    if (seq == NULL) {
        Py_DECREF(keys);
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "runstore: the writer's sequence ended");
        }
        return NULL;
    }
    long long number = PyLong_AsLongLong(seq);
    Py_DECREF(seq);
    if (number == -1 && PyErr_Occurred()) {
        Py_DECREF(keys);
        return NULL;
    }
    struct timespec now;
    clock_gettime(CLOCK_REALTIME, &now);
    int64_t ts_ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
    if (buffer_append(self->buffer, ts_ns, number, category, keys, numbers, kinds, n) < 0) {
        return NULL;
    }
    if (((unsigned long long)number & self->wake_mask) == 0) {
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
    static char *names[] = {"buffer", "seq", "wake", "fallback", "wake_mask", NULL};
    PyObject *buffer, *seq, *wake, *fallback;
    unsigned long long wake_mask;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O!OOOK:MetricsRecorder", names, &BufferType,
                                     &buffer, &seq, &wake, &fallback, &wake_mask)) {
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
    self->buffer = (Buffer *)Py_NewRef(buffer);
    self->seq = Py_NewRef(seq);
    self->wake = Py_NewRef(wake);
    self->fallback = Py_NewRef(fallback);
    self->last_keys = NULL;
    self->wake_mask = wake_mask;
    self->open = 1;
    return (PyObject *)self;
}

static int
recorder_traverse(Recorder *self, visitproc visit, void *arg)
{
    Py_VISIT(self->seq);
    Py_VISIT(self->wake);
    Py_VISIT(self->fallback);
    return 0;
}

static int
recorder_clear(Recorder *self)
{
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
    Py_CLEAR(self->buffer);
    Py_CLEAR(self->last_keys);
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

static PyObject *
fill_float_rows(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *ts_list, *seq_list, *category_list, *values_list, *buffers[FILL_OUTS];
    Py_ssize_t rows;
    if (!PyArg_ParseTuple(args, "O!O!O!O!nOOOOOO:fill_float_rows", &PyList_Type, &ts_list,
                          &PyList_Type, &seq_list, &PyList_Type, &category_list, &PyList_Type,
                          &values_list, &rows, &buffers[0], &buffers[1], &buffers[2],
                          &buffers[3], &buffers[4], &buffers[5])) {
        return NULL;
    }
    Py_ssize_t records = PyList_GET_SIZE(seq_list);
    if (PyList_GET_SIZE(ts_list) != records || PyList_GET_SIZE(category_list) != records
        || PyList_GET_SIZE(values_list) != records) {
        PyErr_SetString(PyExc_ValueError, "columns of different lengths");
        return NULL;
    }
    Fill fill;
    PyObject *result = NULL;
    if (fill_open(&fill, buffers, rows) < 0) {
        goto done;
    }
    int64_t *ts_out = fill.outs[0].view.buf, *seq_out = fill.outs[1].view.buf;
    double *value_out = fill.outs[2].view.buf;
    int32_t *key_out = fill.outs[3].view.buf, *category_out = fill.outs[4].view.buf;
    memset(fill.outs[5].view.buf, 0, (size_t)rows * sizeof(int32_t)); /* all KIND_FLOAT */
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
            last_category_code = code_of(fill.category_codes, fill.categories, name);
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
                code = code_of(fill.key_codes, fill.keys, k);
                first_keys[j] = k;
                first_codes[j] = code;
            }
            else if (j < first_size && j < 64 && first_keys[j] == k) {
                code = first_codes[j];
            }
            else {
                code = code_of(fill.key_codes, fill.keys, k);
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
    result = fill_result(&fill, uniform, finite);
    goto done;
unusable:
    PyErr_Clear();
    result = Py_NewRef(Py_None);
done:
    fill_close(&fill);
    return result;
}

static PyMethodDef module_methods[] = {
    {"count_rows", count_rows, METH_O,
     "count_rows(values) -> rows of the metrics table of a values column (keys over all "
     "calls), or None if one is not a dict."},
    {"fill_float_rows", fill_float_rows, METH_VARARGS,
     "fill_float_rows(ts_ns, seq, category, values, rows, ts, seq, value, key, category, "
     "kind) -> "
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
    if (PyType_Ready(&RecorderType) < 0 || PyType_Ready(&BufferType) < 0) {
        return NULL;
    }
    PyObject *m = PyModule_Create(&module);
    if (m == NULL) {
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "MetricsRecorder", (PyObject *)&RecorderType) < 0
        || PyModule_AddObjectRef(m, "MetricsBuffer", (PyObject *)&BufferType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
