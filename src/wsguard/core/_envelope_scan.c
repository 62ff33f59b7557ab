/* The envelope's fast-path checks in C: what envelope.py's py_prescan and
 * py_count_keys do with several passes of str methods, in one pass, and the
 * success path of EnvelopeDecoder._checked_fields.
 *
 * Optional: envelope.py falls back to its Python functions when this module
 * is not built, and tests/core/test_envelope_scan.py checks that both decide
 * alike on generated and adversarial frames.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>

/* Does `marker` (of `length` ASCII characters) start at position i? */
static inline int
starts_with(int kind, const void *data, Py_ssize_t n, Py_ssize_t i, const char *marker,
            Py_ssize_t length)
{
    if (n - i < length) {
        return 0;
    }
    for (Py_ssize_t j = 0; j < length; j++) {
        if (PyUnicode_READ(kind, data, i + j) != (Py_UCS4)(unsigned char)marker[j]) {
            return 0;
        }
    }
    return 1;
}

/* A character that sanitization refuses and JSON may carry raw: DEL and the C1
 * controls, the bidi embeddings/overrides and isolates, lone surrogates. */
static inline int
refused(Py_UCS4 c)
{
    return (c >= 0x7f && c <= 0x9f) || (c >= 0x202a && c <= 0x202e) ||
           (c >= 0x2066 && c <= 0x2069) || (c >= 0xd800 && c <= 0xdfff);
}

/* The scan of prescan() below. Always inlined, and called with a constant
 * kind, so that each kind gets its own loop without a switch per character. */
static inline Py_ALWAYS_INLINE Py_ssize_t
scan(int kind, const void *data, Py_ssize_t n, Py_ssize_t max_depth)
{
    Py_ssize_t brackets = 0, key_ends = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, data, i);
        switch (c) {
        case '"': {
            Py_ssize_t j = i + 1;
            Py_UCS4 next;
            while (j < n && ((next = PyUnicode_READ(kind, data, j)) == ' ' || next == '\t' ||
                             next == '\r' || next == '\n')) {
                j++;
            }
            if (j < n && PyUnicode_READ(kind, data, j) == ':') {
                key_ends++;
            }
            break;
        }
        case '{':
        case '[':
            if (++brackets > max_depth) {
                return -1;
            }
            break;
        case '\\':
            /* Pairwise, as the regex \\[^"\\/nrt] does: "\\u" is slow too. */
            if (i + 1 < n) {
                Py_UCS4 escaped = PyUnicode_READ(kind, data, i + 1);
                if (escaped != '"' && escaped != '\\' && escaped != '/' && escaped != 'n' &&
                    escaped != 'r' && escaped != 't') {
                    return -1;
                }
            }
            break;
        case '_':
            if (starts_with(kind, data, n, i, "__proto__", 9)) {
                return -1;
            }
            break;
        case 'c':
            if (starts_with(kind, data, n, i, "constructor", 11)) {
                return -1;
            }
            break;
        case 'p':
            if (starts_with(kind, data, n, i, "prototype", 9)) {
                return -1;
            }
            break;
        default:
            if (c >= 0x7f && refused(c)) {
                return -1;
            }
            break;
        }
    }
    return key_ends;
}

/* prescan(text, max_depth) -> int
 *
 * -1 when the frame must take the exact slow path: a character sanitization
 * refuses (see refused()); one of the prototype-pollution key names; a
 * backslash followed by anything but " \\ / n r t; more "{" and "[" together
 * than max_depth. Otherwise the number of key ends: '"', optional JSON
 * whitespace, ':'. (NFC, the other thing sanitization does to non-ASCII
 * text, is checked by the caller.)
 */
static PyObject *
prescan(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "prescan(text: str, max_depth: int)");
        return NULL;
    }
    PyObject *text = args[0];
    Py_ssize_t max_depth = PyLong_AsSsize_t(args[1]);
    if (max_depth == -1 && PyErr_Occurred()) {
        return NULL;
    }
    const void *data = PyUnicode_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    switch (PyUnicode_KIND(text)) {
    case PyUnicode_1BYTE_KIND:
        return PyLong_FromSsize_t(scan(PyUnicode_1BYTE_KIND, data, n, max_depth));
    case PyUnicode_2BYTE_KIND:
        return PyLong_FromSsize_t(scan(PyUnicode_2BYTE_KIND, data, n, max_depth));
    default:
        return PyLong_FromSsize_t(scan(PyUnicode_4BYTE_KIND, data, n, max_depth));
    }
}

/* Keys in every dict of a decoded value (exact dicts and lists only, as msgspec
 * makes). The depth is bounded by prescan's bracket count; the recursion check
 * guards any other caller. */
static Py_ssize_t count(PyObject *value);

/* Adds the keys inside `item` to *total; -1 on error (RecursionError). */
static int
add_inner(PyObject *item, Py_ssize_t *total)
{
    if (!PyDict_CheckExact(item) && !PyList_CheckExact(item)) {
        return 0;
    }
    if (Py_EnterRecursiveCall(" in count_keys")) {
        return -1;
    }
    Py_ssize_t inner = count(item);
    Py_LeaveRecursiveCall();
    if (inner < 0) {
        return -1;
    }
    *total += inner;
    return 0;
}

static Py_ssize_t
count(PyObject *value)
{
    Py_ssize_t total = 0;
    if (PyDict_CheckExact(value)) {
        total = PyDict_GET_SIZE(value);
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (add_inner(item, &total) < 0) {
                return -1;
            }
        }
    }
    else if (PyList_CheckExact(value)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            if (add_inner(PyList_GET_ITEM(value, i), &total) < 0) {
                return -1;
            }
        }
    }
    return total;
}

static PyObject *
count_keys(PyObject *Py_UNUSED(module), PyObject *value)
{
    Py_ssize_t total = count(value);
    if (total < 0) {
        return NULL;
    }
    return PyLong_FromSsize_t(total);
}

/* Is `value` a message id, [A-Za-z0-9_.:-]{1,64}? */
static int
is_message_id(PyObject *value)
{
    if (!PyUnicode_CheckExact(value) || !PyUnicode_IS_ASCII(value)) {
        return 0;
    }
    Py_ssize_t n = PyUnicode_GET_LENGTH(value);
    if (n < 1 || n > 64) {
        return 0;
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(value);
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS1 c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '.' || c == ':' || c == '-')) {
            return 0;
        }
    }
    return 1;
}

/* envelope_fields(obj, now, max_skew_ms, max_csrf_chars, envelope_type)
 *     -> envelope_type | None
 *
 * The envelope of a decoded frame whose own keys are all valid, built as
 * envelope_type(type, id, payload, csrfToken, timestamp); None for anything
 * else, which the Python checks then refuse with the exact error. It never
 * raises for a bad frame: it only declines.
 */
static PyObject *
envelope_fields(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 5 || !PyLong_Check(args[3]) || !PyType_Check(args[4]) ||
        !PyType_IsSubtype((PyTypeObject *)args[4], &PyTuple_Type)) {
        PyErr_SetString(PyExc_TypeError,
                        "envelope_fields(obj, now: float, max_skew_ms: float, "
                        "max_csrf_chars: int, envelope_type: type[tuple])");
        return NULL;
    }
    double now = PyFloat_AsDouble(args[1]); /* any real number, as in Python */
    if (now == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    double max_skew_ms = PyFloat_AsDouble(args[2]);
    if (max_skew_ms == -1.0 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *obj = args[0];
    if (!PyDict_CheckExact(obj)) {
        Py_RETURN_NONE;
    }
    Py_ssize_t max_csrf = PyLong_AsSsize_t(args[3]);
    if (max_csrf == -1 && PyErr_Occurred()) {
        return NULL;
    }
    PyObject *kind = NULL, *id = Py_None, *payload = NULL, *csrf = Py_None, *timestamp = Py_None;
    Py_ssize_t pos = 0;
    PyObject *key, *value;
    while (PyDict_Next(obj, &pos, &key, &value)) {
        if (!PyUnicode_CheckExact(key)) {
            Py_RETURN_NONE;
        }
        if (PyUnicode_CompareWithASCIIString(key, "type") == 0) {
            kind = value;
        }
        else if (PyUnicode_CompareWithASCIIString(key, "id") == 0) {
            id = value;
        }
        else if (PyUnicode_CompareWithASCIIString(key, "payload") == 0) {
            payload = value;
        }
        else if (PyUnicode_CompareWithASCIIString(key, "csrfToken") == 0) {
            csrf = value;
        }
        else if (PyUnicode_CompareWithASCIIString(key, "timestamp") == 0) {
            timestamp = value;
        }
        else {
            Py_RETURN_NONE; /* an unknown top-level key */
        }
    }
    if (kind == NULL || !PyUnicode_Check(kind) || PyUnicode_GET_LENGTH(kind) == 0) {
        Py_RETURN_NONE;
    }
    if (id != Py_None && !is_message_id(id)) {
        Py_RETURN_NONE;
    }
    if (csrf != Py_None && (!PyUnicode_Check(csrf) || PyUnicode_GET_LENGTH(csrf) > max_csrf)) {
        Py_RETURN_NONE;
    }
    if (timestamp != Py_None) {
        if (!PyLong_CheckExact(timestamp)) {
            Py_RETURN_NONE; /* bool is a subclass: refused, as type(x) is int refuses it */
        }
        double ms = PyLong_AsDouble(timestamp);
        if (ms == -1.0 && PyErr_Occurred()) {
            PyErr_Clear(); /* too large for a float: the Python checks decide */
            Py_RETURN_NONE;
        }
        if (!(fabs(ms - now * 1000.0) <= max_skew_ms)) {
            Py_RETURN_NONE;
        }
    }
    PyObject *owned_payload = NULL;
    if (payload == NULL) {
        payload = owned_payload = PyDict_New();
        if (payload == NULL) {
            return NULL;
        }
    }
    else if (!PyDict_Check(payload)) {
        Py_RETURN_NONE;
    }
    PyTypeObject *type = (PyTypeObject *)args[4];
    PyObject *envelope = type->tp_alloc(type, 5);
    if (envelope == NULL) {
        Py_XDECREF(owned_payload);
        return NULL;
    }
    PyObject *items[5] = {kind, id, payload, csrf, timestamp};
    for (Py_ssize_t i = 0; i < 5; i++) {
        if (items[i] != owned_payload) {
            Py_INCREF(items[i]);
        }
        PyTuple_SET_ITEM(envelope, i, items[i]);
    }
    return envelope;
}

static PyMethodDef methods[] = {
    {"prescan", (PyCFunction)(void (*)(void))prescan, METH_FASTCALL,
     "The key-end count of a frame that may take the fast path, else -1."},
    {"count_keys", count_keys, METH_O, "Keys in every dict of a decoded value."},
    {"envelope_fields", (PyCFunction)(void (*)(void))envelope_fields, METH_FASTCALL,
     "The envelope of a decoded frame whose own keys are valid, else None."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wsguard.core._envelope_scan",
    "The envelope's fast-path checks in C.", 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__envelope_scan(void)
{
    return PyModuleDef_Init(&module);
}
