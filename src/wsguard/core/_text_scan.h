/* What the C scanners share: a str's characters read by index, with bounds.
 *
 * Every function is inlined: a scanner copies its Text with a constant kind
 * (one loop per kind), and the reads below then compile to plain loads.
 */
#ifndef WSGUARD_TEXT_SCAN_H
#define WSGUARD_TEXT_SCAN_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

typedef struct {
    int kind;
    const void *data;
    Py_ssize_t n;
} Text;

/* The character at i, or 0 past either end. */
static inline Py_ALWAYS_INLINE Py_UCS4
at(const Text *t, Py_ssize_t i)
{
    return (i >= 0 && i < t->n) ? PyUnicode_READ(t->kind, t->data, i) : 0;
}

/* Does the ASCII literal `word` start at i? */
static inline Py_ALWAYS_INLINE int
starts(const Text *t, Py_ssize_t i, const char *word)
{
    for (; *word; word++, i++) {
        if (at(t, i) != (Py_UCS4)(unsigned char)*word) {
            return 0;
        }
    }
    return 1;
}

#endif
