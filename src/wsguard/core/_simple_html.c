/* SimpleHtml.clean() in C: the simple-markup subset of HTML cleaning, in one
 * pass over the text (simple_html.py explains the subset and why nh3 gives
 * back the same output for it).
 *
 * clean(text, mask) returns the cleaned text, or None when the text is
 * outside the subset. `mask` has bit k set when TAGS[k] is allowed; the bit
 * of "a" means links are allowed (the tag, href, and http/https).
 *
 * Optional: simple_html.py keeps the same function in Python as the
 * fallback, and tests/core/test_simple_html.py holds the two equal to each
 * other and to nh3.
 */
#include "_text_scan.h"

/* The order of SIMPLE_TAG_ORDER in simple_html.py. */
static const char *const TAGS[] = {
    "a", "b", "br", "code", "em", "i", "p", "s", "span", "strong", "u", NULL,
};
enum { TAG_A = 0, TAG_BR = 2, TAG_P = 6, MAX_DEPTH = 64 };
/* simple_html.LINK_REL; the tests hold this function equal to py_clean. */
static const char REL[] = " rel=\"noopener noreferrer\"";

static inline Py_ALWAYS_INLINE int
is_label_char(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
}

/* [A-Za-z0-9._~/?#@!$()*+,;=%:-] */
static inline Py_ALWAYS_INLINE int
is_path_char(Py_UCS4 c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           (c < 128 && strchr("._~/?#@!$()*+,;=%:-", (int)c) != NULL && c != 0);
}

/* The link tag from i (just after "<"): _LINK in simple_html.py, then ">".
 * Returns the position of its ">", or -1. */
static inline Py_ALWAYS_INLINE Py_ssize_t
link_end(const Text *t, Py_ssize_t i)
{
    if (!starts(t, i, "a href=\"http")) {
        return -1;
    }
    i += 12;
    if (at(t, i) == 's') {
        i++;
    }
    if (!starts(t, i, "://")) {
        return -1;
    }
    i += 3;
    /* Labels split by dots, 1 to 9 of them, each 1 to 63 characters, none
     * starting "xn--"; the last one starts with a letter. */
    for (int labels = 1;; labels++) {
        Py_ssize_t start = i;
        while (is_label_char(at(t, i))) {
            i++;
        }
        Py_ssize_t length = i - start;
        if (length < 1 || length > 63 || starts(t, start, "xn--")) {
            return -1;
        }
        if (at(t, i) == '.') {
            if (labels == 9) {
                return -1;
            }
            i++;
            continue;
        }
        Py_UCS4 first = at(t, start);
        if (!(first >= 'a' && first <= 'z')) {
            return -1;
        }
        break;
    }
    Py_UCS4 c = at(t, i);
    if (c == '/' || c == '?' || c == '#') {
        Py_ssize_t start = ++i;
        while (is_path_char(at(t, i))) {
            i++;
        }
        if (i - start > 1000) {
            return -1;
        }
    }
    if (!starts(t, i, "\">")) {
        return -1;
    }
    return i + 1;
}

/* The tag name between "<" (or "</") and ">" from i: its index in TAGS and
 * the position of ">", or -1. */
static inline Py_ALWAYS_INLINE int
tag_at(const Text *t, Py_ssize_t i, Py_ssize_t *end)
{
    for (int k = 0; TAGS[k]; k++) {
        if (starts(t, i, TAGS[k])) {
            Py_ssize_t after = i + (Py_ssize_t)strlen(TAGS[k]);
            if (at(t, after) == '>') {
                *end = after;
                return k;
            }
        }
    }
    return -1;
}

/* Checks the text; returns the number of links (each gets REL), or -1. */
static inline Py_ALWAYS_INLINE Py_ssize_t
check(const Text *t, int kind, unsigned long mask)
{
    Text local = {kind, t->data, t->n};
    const Text *s = &local;
    int stack[MAX_DEPTH];
    int depth = 0, in_link = 0;
    Py_ssize_t links = 0;
    for (Py_ssize_t i = 0; i < s->n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, s->data, i);
        if (c == '<') {
            Py_ssize_t end;
            int closing = at(s, i + 1) == '/';
            int tag = tag_at(s, i + 1 + closing, &end);
            if (tag == TAG_A || tag < 0) {
                /* "<a>" has no href; "</a>" closes a link. */
                if (closing && tag == TAG_A) {
                    if (depth == 0 || stack[--depth] != TAG_A) {
                        return -1;
                    }
                    in_link = 0;
                    i = end;
                    continue;
                }
                if (closing || !(mask & 1UL) || in_link || depth == MAX_DEPTH) {
                    return -1;
                }
                end = link_end(s, i + 1);
                if (end < 0) {
                    return -1;
                }
                stack[depth++] = TAG_A;
                in_link = 1;
                links++;
                i = end;
                continue;
            }
            if (!(mask & (1UL << tag))) {
                return -1;
            }
            if (closing) {
                if (tag == TAG_BR || depth == 0 || stack[--depth] != tag) {
                    return -1;
                }
            }
            else if (tag != TAG_BR) {
                if ((tag == TAG_P && depth > 0) || depth == MAX_DEPTH) {
                    return -1; /* html5ever would close or move an inner <p> */
                }
                stack[depth++] = tag;
            }
            i = end;
        }
        else if (c == '&') {
            if (starts(s, i + 1, "amp;") || starts(s, i + 1, "lt;") || starts(s, i + 1, "gt;")) {
                continue; /* checked again from its letters: none is special */
            }
            if (!starts(s, i + 1, "nbsp;")) {
                return -1;
            }
        }
        else if (c == '>' || (c < 0x20 && c != '\t' && c != '\n') || (c >= 0x7f && c <= 0xa0) ||
                 c == 0xfeff || (c >= 0xd800 && c <= 0xdfff)) {
            return -1;
        }
    }
    return depth == 0 ? links : -1;
}

static PyObject *
clean(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    (void)module;
    if (nargs != 2 || !PyUnicode_Check(args[0]) || !PyLong_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "clean() takes a str and an int mask");
        return NULL;
    }
    PyObject *text = args[0];
    unsigned long mask = PyLong_AsUnsignedLong(args[1]);
    if (mask == (unsigned long)-1 && PyErr_Occurred()) {
        return NULL;
    }
    Text t = {PyUnicode_KIND(text), PyUnicode_DATA(text), PyUnicode_GET_LENGTH(text)};
    Py_ssize_t links;
    switch (t.kind) {
    case PyUnicode_1BYTE_KIND:
        links = check(&t, PyUnicode_1BYTE_KIND, mask);
        break;
    case PyUnicode_2BYTE_KIND:
        links = check(&t, PyUnicode_2BYTE_KIND, mask);
        break;
    default:
        links = check(&t, PyUnicode_4BYTE_KIND, mask);
        break;
    }
    if (links < 0) {
        Py_RETURN_NONE;
    }
    if (links == 0) {
        return Py_NewRef(text);
    }
    /* Copy the text, adding REL before the ">" of each link. */
    Py_ssize_t rel = (Py_ssize_t)strlen(REL);
    PyObject *out = PyUnicode_New(t.n + links * rel, PyUnicode_MAX_CHAR_VALUE(text));
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t from = 0, to = 0;
    for (Py_ssize_t i = 0; i + 2 < t.n; i++) {
        if (at(&t, i) == '<' && at(&t, i + 1) == 'a' && at(&t, i + 2) == ' ') {
            Py_ssize_t end = i + 3;
            while (end < t.n && at(&t, end) != '>') { /* check() found its ">" */
                end++;
            }
            if (PyUnicode_CopyCharacters(out, to, text, from, end - from) < 0) {
                Py_DECREF(out);
                return NULL;
            }
            to += end - from;
            for (Py_ssize_t k = 0; k < rel; k++) {
                PyUnicode_WRITE(PyUnicode_KIND(out), PyUnicode_DATA(out), to++, (Py_UCS4)REL[k]);
            }
            from = end;
            i = end;
        }
    }
    if (PyUnicode_CopyCharacters(out, to, text, from, t.n - from) < 0) {
        Py_DECREF(out);
        return NULL;
    }
    return out;
}

static PyMethodDef methods[] = {
    {"clean", (PyCFunction)(void (*)(void))clean, METH_FASTCALL,
     "The cleaned text of simple markup, or None when it is not simple."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wsguard.core._simple_html",
    "The simple-markup subset of HTML cleaning, in C.", 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__simple_html(void)
{
    return PyModuleDef_Init(&module);
}
