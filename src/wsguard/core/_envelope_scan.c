/* The envelope's fast-path checks in C: what envelope.py's _prescan and
 * _count_keys do with several passes of str methods, in one pass.
 *
 * Optional: envelope.py falls back to its Python functions when this module
 * is not built, and tests/core/test_envelope_scan.py checks that both decide
 * alike on generated and adversarial frames.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <string.h>

/* Does `marker` (of `length` characters) start at s[i]? */
static inline int
starts_with(const Py_UCS1 *s, Py_ssize_t n, Py_ssize_t i, const char *marker, Py_ssize_t length)
{
    return n - i >= length && memcmp(s + i, marker, (size_t)length) == 0;
}

/* prescan(text, max_depth) -> int
 *
 * -1 when the frame must take the exact slow path: not ASCII; a DEL; one of
 * the prototype-pollution key names; a backslash followed by anything but
 * " \ / n r t; more "{" and "[" together than max_depth. Otherwise the number
 * of key ends: '"', optional JSON whitespace, ':'.
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
    if (!PyUnicode_IS_ASCII(text)) {
        return PyLong_FromLong(-1);
    }
    const Py_UCS1 *s = PyUnicode_1BYTE_DATA(text);
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    Py_ssize_t brackets = 0, key_ends = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        switch (s[i]) {
        case '"': {
            Py_ssize_t j = i + 1;
            while (j < n && (s[j] == ' ' || s[j] == '\t' || s[j] == '\r' || s[j] == '\n')) {
                j++;
            }
            if (j < n && s[j] == ':') {
                key_ends++;
            }
            break;
        }
        case '{':
        case '[':
            if (++brackets > max_depth) {
                return PyLong_FromLong(-1);
            }
            break;
        case '\\':
            /* Pairwise, as the regex \\[^"\\/nrt] does: "\\u" is slow too. The
             * NUL test first: strchr finds the terminator of its set. */
            if (i + 1 < n && (s[i + 1] == 0 || strchr("\"\\/nrt", s[i + 1]) == NULL)) {
                return PyLong_FromLong(-1);
            }
            break;
        case 0x7f:
            return PyLong_FromLong(-1);
        case '_':
            if (starts_with(s, n, i, "__proto__", 9)) {
                return PyLong_FromLong(-1);
            }
            break;
        case 'c':
            if (starts_with(s, n, i, "constructor", 11)) {
                return PyLong_FromLong(-1);
            }
            break;
        case 'p':
            if (starts_with(s, n, i, "prototype", 9)) {
                return PyLong_FromLong(-1);
            }
            break;
        default:
            break;
        }
    }
    return PyLong_FromSsize_t(key_ends);
}

/* Keys in every dict of a decoded value (exact dicts and lists only, as msgspec
 * makes). The depth is bounded by prescan's bracket count; the recursion check
 * guards any other caller. */
static Py_ssize_t
count(PyObject *value)
{
    Py_ssize_t total = 0;
    if (PyDict_CheckExact(value)) {
        total = PyDict_GET_SIZE(value);
        Py_ssize_t pos = 0;
        PyObject *key, *item;
        while (PyDict_Next(value, &pos, &key, &item)) {
            if (PyDict_CheckExact(item) || PyList_CheckExact(item)) {
                if (Py_EnterRecursiveCall(" in count_keys")) {
                    return -1;
                }
                Py_ssize_t inner = count(item);
                Py_LeaveRecursiveCall();
                if (inner < 0) {
                    return -1;
                }
                total += inner;
            }
        }
    }
    else if (PyList_CheckExact(value)) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(value); i++) {
            PyObject *item = PyList_GET_ITEM(value, i);
            if (PyDict_CheckExact(item) || PyList_CheckExact(item)) {
                if (Py_EnterRecursiveCall(" in count_keys")) {
                    return -1;
                }
                Py_ssize_t inner = count(item);
                Py_LeaveRecursiveCall();
                if (inner < 0) {
                    return -1;
                }
                total += inner;
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

static PyMethodDef methods[] = {
    {"prescan", (PyCFunction)(void (*)(void))prescan, METH_FASTCALL,
     "The key-end count of a frame that may take the fast path, else -1."},
    {"count_keys", count_keys, METH_O, "Keys in every dict of a decoded value."},
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
