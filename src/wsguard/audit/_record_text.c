/* The canonical text of an audit record, in C: the two halves of
 * Chain.record's text around "hash", for the common event (every string
 * ASCII, a finite float time, no details).
 *
 * halves(event, prev_hash, seq) returns (head, tail) such that
 * head + "," + tail is canonical(record without "hash") and
 * head + ',"hash":"<hex>",' + tail is canonical(record), or None when the
 * event is not of that kind; the caller then builds the text in Python.
 *
 * Optional: chain.py keeps the Python path (py_halves) as the fallback, and
 * tests/audit/test_record_text.py holds the two equal on generated events.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdio.h>

/* The fields of AuditEvent, in order. */
enum { EVENT, SEVERITY, TIME, REQUEST_ID, SESSION_ID, USER, CLIENT_IP, DETAILS, N_FIELDS };

static inline int
is_ascii_str(PyObject *o)
{
    return PyUnicode_CheckExact(o) && PyUnicode_IS_ASCII(o);
}

/* How json.dumps(ensure_ascii=False) writes an ASCII character: the letter of
 * its two-character escape, or 0 when it has none (then \u00XX below 0x20,
 * itself otherwise). json_length() and write_json() both ask here, so that
 * the length counted is always the length written. */
static inline char
short_escape(Py_UCS1 c)
{
    switch (c) {
    case '"': return '"';
    case '\\': return '\\';
    case '\b': return 'b';
    case '\f': return 'f';
    case '\n': return 'n';
    case '\r': return 'r';
    case '\t': return 't';
    default: return 0;
    }
}

static inline Py_ssize_t
escaped_length(Py_UCS1 c)
{
    return short_escape(c) ? 2 : c < 0x20 ? 6 : 1;
}

/* The length of json.dumps(s, ensure_ascii=False) for an ASCII str, or of
 * "null" for None. */
static Py_ssize_t
json_length(PyObject *s)
{
    if (s == Py_None) {
        return 4;
    }
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s), length = 2;
    for (Py_ssize_t i = 0; i < n; i++) {
        length += escaped_length(p[i]);
    }
    return length;
}

static char *
write_raw(char *out, const char *text)
{
    size_t n = strlen(text);
    memcpy(out, text, n);
    return out + n;
}

/* Writes what json_length() counted. */
static char *
write_json(char *out, PyObject *s)
{
    static const char hex[] = "0123456789abcdef";
    if (s == Py_None) {
        return write_raw(out, "null");
    }
    const Py_UCS1 *p = PyUnicode_1BYTE_DATA(s);
    Py_ssize_t n = PyUnicode_GET_LENGTH(s);
    *out++ = '"';
    for (Py_ssize_t i = 0; i < n; i++) {
        Py_UCS1 c = p[i];
        char letter = short_escape(c);
        if (letter) {
            *out++ = '\\';
            *out++ = letter;
        }
        else if (c < 0x20) {
            out = write_raw(out, "\\u00");
            *out++ = hex[c >> 4];
            *out++ = hex[c & 0xf];
        }
        else {
            *out++ = (char)c;
        }
    }
    *out++ = '"';
    return out;
}

static const char CLIENT_IP_KEY[] = "{\"client_ip\":";
static const char EVENT_KEY[] = ",\"details\":{},\"event\":";
static const char PREV_HASH_KEY[] = "\"prev_hash\":";
static const char REQUEST_ID_KEY[] = ",\"request_id\":";
static const char SEQ_KEY[] = ",\"seq\":";
static const char SESSION_ID_KEY[] = ",\"session_id\":";
static const char SEVERITY_KEY[] = ",\"severity\":";
static const char TIME_KEY[] = ",\"time\":";
static const char USER_KEY[] = ",\"user\":";

#define KEY_LENGTH(key) ((Py_ssize_t)(sizeof(key) - 1))

static PyObject *
halves(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "halves(event, prev_hash, seq)");
        return NULL;
    }
    PyObject *event = args[0], *prev_hash = args[1], *seq = args[2];
    if (!PyTuple_Check(event) || PyTuple_GET_SIZE(event) != N_FIELDS) {
        PyErr_SetString(PyExc_TypeError, "event must be an AuditEvent");
        return NULL;
    }
    PyObject *name = PyTuple_GET_ITEM(event, EVENT);
    PyObject *severity = PyTuple_GET_ITEM(event, SEVERITY);
    PyObject *time = PyTuple_GET_ITEM(event, TIME);
    PyObject *optional[] = {
        PyTuple_GET_ITEM(event, REQUEST_ID),
        PyTuple_GET_ITEM(event, SESSION_ID),
        PyTuple_GET_ITEM(event, USER),
        PyTuple_GET_ITEM(event, CLIENT_IP),
    };
    if (!is_ascii_str(name) || !is_ascii_str(severity) || !is_ascii_str(prev_hash) ||
        !PyFloat_CheckExact(time) || !isfinite(PyFloat_AS_DOUBLE(time)) ||
        !PyLong_CheckExact(seq)) {
        Py_RETURN_NONE;
    }
    for (int i = 0; i < 4; i++) {
        if (optional[i] != Py_None && !is_ascii_str(optional[i])) {
            Py_RETURN_NONE;
        }
    }
    int has_details = PyObject_IsTrue(PyTuple_GET_ITEM(event, DETAILS));
    if (has_details != 0) { /* details (or an error) take the Python path */
        if (has_details < 0) {
            return NULL;
        }
        Py_RETURN_NONE;
    }
    int overflow = 0;
    long long seq_value = PyLong_AsLongLongAndOverflow(seq, &overflow);
    if (overflow) {
        Py_RETURN_NONE;
    }
    if (seq_value == -1 && PyErr_Occurred()) {
        return NULL;
    }
    char seq_text[24];
    int seq_length = snprintf(seq_text, sizeof(seq_text), "%lld", seq_value);
    /* float.__repr__ */
    char *time_text = PyOS_double_to_string(PyFloat_AS_DOUBLE(time), 'r', 0, Py_DTSF_ADD_DOT_0,
                                            NULL);
    if (time_text == NULL) {
        return NULL;
    }
    PyObject *request_id = optional[0], *session_id = optional[1], *user = optional[2],
             *client_ip = optional[3];

    Py_ssize_t head_length = KEY_LENGTH(CLIENT_IP_KEY) + json_length(client_ip) +
                             KEY_LENGTH(EVENT_KEY) + json_length(name);
    Py_ssize_t tail_length =
        KEY_LENGTH(PREV_HASH_KEY) + json_length(prev_hash) + KEY_LENGTH(REQUEST_ID_KEY) +
        json_length(request_id) + KEY_LENGTH(SEQ_KEY) + seq_length + KEY_LENGTH(SESSION_ID_KEY) +
        json_length(session_id) + KEY_LENGTH(SEVERITY_KEY) + json_length(severity) +
        KEY_LENGTH(TIME_KEY) + (Py_ssize_t)strlen(time_text) + KEY_LENGTH(USER_KEY) +
        json_length(user) + 1;
    PyObject *head = PyUnicode_New(head_length, 127);
    PyObject *tail = head == NULL ? NULL : PyUnicode_New(tail_length, 127);
    if (tail == NULL) {
        Py_XDECREF(head);
        PyMem_Free(time_text);
        return NULL;
    }
    char *out = (char *)PyUnicode_1BYTE_DATA(head);
    out = write_raw(out, CLIENT_IP_KEY);
    out = write_json(out, client_ip);
    out = write_raw(out, EVENT_KEY);
    out = write_json(out, name);
    int counted = out == (char *)PyUnicode_1BYTE_DATA(head) + head_length;

    out = (char *)PyUnicode_1BYTE_DATA(tail);
    out = write_raw(out, PREV_HASH_KEY);
    out = write_json(out, prev_hash);
    out = write_raw(out, REQUEST_ID_KEY);
    out = write_json(out, request_id);
    out = write_raw(out, SEQ_KEY);
    out = write_raw(out, seq_text);
    out = write_raw(out, SESSION_ID_KEY);
    out = write_json(out, session_id);
    out = write_raw(out, SEVERITY_KEY);
    out = write_json(out, severity);
    out = write_raw(out, TIME_KEY);
    out = write_raw(out, time_text);
    out = write_raw(out, USER_KEY);
    out = write_json(out, user);
    *out++ = '}';
    counted = counted && out == (char *)PyUnicode_1BYTE_DATA(tail) + tail_length;
    PyMem_Free(time_text);
    if (!counted) { /* a length not counted as written: never return a partial text */
        Py_DECREF(head);
        Py_DECREF(tail);
        PyErr_SetString(PyExc_SystemError, "record text length mismatch");
        return NULL;
    }

    PyObject *result = PyTuple_New(2);
    if (result == NULL) {
        Py_DECREF(head);
        Py_DECREF(tail);
        return NULL;
    }
    PyTuple_SET_ITEM(result, 0, head);
    PyTuple_SET_ITEM(result, 1, tail);
    return result;
}

static PyMethodDef methods[] = {
    {"halves", (PyCFunction)(void (*)(void))halves, METH_FASTCALL,
     "The record text's halves around \"hash\", or None when the event needs the Python path."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wsguard.audit._record_text",
    "The canonical text of a common audit record, in C.", 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__record_text(void)
{
    return PyModuleDef_Init(&module);
}
