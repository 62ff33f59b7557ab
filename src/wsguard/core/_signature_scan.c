/* The attack-signature scanner's prefilter in C: where the first match of the
 * combined pattern in signatures.py could start.
 *
 * Every rule of that pattern starts at an anchor character and, right after
 * it (or after the blanks its anchor shares, matched possessively), needs a
 * literal word or a character of a small class. first_candidate() walks the
 * lowered text once and returns the first anchor position where that holds,
 * or -1: no rule can match anywhere. SignatureScanner.scan_text then starts
 * re's search there, or skips it. Ordinary text has no candidate at all, so
 * it costs one C pass instead of re's per-character loop.
 *
 * The checks here may only be looser than the rules, never stricter: a
 * position that a rule matches from must be a candidate. Each check names the
 * rules it stands for. tests/core/test_signature_scan.py holds search(text,
 * first_candidate(text)) equal to search(text) on every example of
 * tests/core/test_signatures.py, on edge attacks built rule by rule and on
 * generated texts.
 *
 * Character classes are re's for str patterns: \s is Py_UNICODE_ISSPACE, \d
 * is Py_UNICODE_ISDECIMAL, [a-z] is ASCII (the text is already lowered).
 */
#include "_text_scan.h"

/* 0, which at() gives past either end, is in no class checked here. */

/* Does the ASCII literal `word` end just before i? */
static inline Py_ALWAYS_INLINE int
ends(const Text *t, Py_ssize_t i, const char *word)
{
    Py_ssize_t length = (Py_ssize_t)strlen(word);
    return i >= length && starts(t, i - length, word);
}

static inline Py_ALWAYS_INLINE int
any_starts(const Text *t, Py_ssize_t i, const char *const *words)
{
    for (; *words; words++) {
        if (starts(t, i, *words)) {
            return 1;
        }
    }
    return 0;
}

static inline Py_ALWAYS_INLINE int
is_space(Py_UCS4 c)
{
    return c != 0 && Py_UNICODE_ISSPACE(c);
}

static inline Py_ALWAYS_INLINE int
is_digit(Py_UCS4 c)
{
    return c != 0 && Py_UNICODE_ISDECIMAL(c);
}

static inline Py_ALWAYS_INLINE int
is_lower(Py_UCS4 c)
{
    return c >= 'a' && c <= 'z';
}

/* Past at most `limit` blanks from i: a possessive \s{0,limit}+. */
static inline Py_ALWAYS_INLINE Py_ssize_t
skip_blanks(const Text *t, Py_ssize_t i, Py_ssize_t limit)
{
    Py_ssize_t end = i + limit;
    while (i < end && is_space(at(t, i))) {
        i++;
    }
    return i;
}

/* The first words of _AFTER_SEPARATOR's rules: rm, n(c|cat|etcat),
 * c(url|at|hmod|hown), wget, bash, zsh, sh, ls, id, whoami, uname,
 * p(ython|erl|hp), powershell, ruby. */
static const char *const AFTER_SEPARATOR[] = {
    "rm", "nc", "netcat", "curl", "cat", "chmod", "chown", "wget", "bash", "zsh", "sh",
    "ls", "id", "whoami", "uname", "python", "perl", "php", "powershell", "ruby", NULL,
};
/* ";" rules before _AFTER_SEPARATOR: drop, truncate, alter, delete, insert,
 * shutdown, exec(ute). */
static const char *const AFTER_SEMICOLON[] = {
    "drop", "truncate", "alter", "delete", "insert", "shutdown", "exec", NULL,
};
/* _SHELL, after a backtick or "$(". */
static const char *const SHELL[] = {
    "cat", "ls", "id", "whoami", "uname", "curl", "wget", "nc", "netcat", "bash", "sh", "zsh", "rm",
    "ping", "sleep", "echo", "printf", "python", "perl", "php", "ruby", "base64", "chmod",
    "powershell", NULL,
};
/* After a quote and [\s);]{0,13}+: or, and, ||, &&, comments (--, / *, #),
 * a dunder (__class__'); and "$" with a NoSQL operator ($ne'). */
static const char *const AFTER_QUOTE[] = {
    "or", "and", "||", "&&", "--", "/*", "#", "__", NULL,
};
/* _NOSQL_OPERATORS */
static const char *const NOSQL_OPERATORS[] = {
    "where", "ne", "eq", "gt", "gte", "lt", "lte", "in", "nin", "regex", "exists", "expr",
    "or", "and", "nor", "not", "elemmatch", "function", "accumulator", "lookup", "jsonschema",
    "type", "size", "all", "mod", NULL,
};
/* After "{{" and \s{0,5}+: the template globals. */
static const char *const TEMPLATE_GLOBALS[] = {
    "config", "self", "request", "lipsum", "cycler", "joiner", "namespace", "url_for",
    "get_flashed_messages", NULL,
};
/* After "${" and \s{0,5}+: the lookups, and "::-". */
static const char *const LOOKUPS[] = {
    "jndi", "env", "sys", "lower", "upper", "date", "java", "main", "ctx", "base64", "k8s",
    "docker", "spring", "bundle", "web", "log4j", "marker", "sd", "map", "event", "::-", NULL,
};
/* "%" rules: 2e, 252e, c0%a[ef], c1%9c, 24%7b. */
static const char *const AFTER_PERCENT[] = {"2e", "25", "c0%", "c1%", "24%", NULL};
/* "/" rules: / * (comment), etc/, proc/self/, bin/. */
static const char *const AFTER_SLASH[] = {"*", "etc/", "proc/self/", "bin/", NULL};

/* "<" rules: script\b, iframe\b, %=, and an event handler inside a tag:
 * [a-z][^<>]{0,200}[\s/"'`]on[a-z]{3,30}\s{0,5}= */
static inline Py_ALWAYS_INLINE int
after_angle(const Text *t, Py_ssize_t i)
{
    if (starts(t, i + 1, "%=")) {
        return 1;
    }
    if (!is_lower(at(t, i + 1))) {
        return 0;
    }
    if (starts(t, i + 1, "script") || starts(t, i + 1, "iframe")) {
        return 1;
    }
    /* The window stops at "<" or ">", as [^<>] does: linear overall. */
    Py_ssize_t last = i + 202;
    for (Py_ssize_t j = i + 2; j <= last && j < t->n; j++) {
        Py_UCS4 c = at(t, j);
        if (c == '<' || c == '>') {
            return 0;
        }
        if ((is_space(c) || c == '/' || c == '"' || c == '\'' || c == '`') &&
            starts(t, j + 1, "on") && is_lower(at(t, j + 3)) && is_lower(at(t, j + 4)) &&
            is_lower(at(t, j + 5))) {
            return 1;
        }
    }
    return 0;
}

/* Could a rule of the combined pattern match from position i? */
static inline Py_ALWAYS_INLINE int
candidate(const Text *t, Py_ssize_t i, Py_UCS4 c)
{
    Py_UCS4 next = at(t, i + 1);
    switch (c) {
    case '<':
        return after_angle(t, i);
    case ':':
        /* (?<=javascript:) (?<=vbscript:) (?<=\bdata:), and [\\/](?<=\bc:[\\/]) */
        return ends(t, i, "javascript") || ends(t, i, "vbscript") || ends(t, i, "data") ||
               (at(t, i - 1) == 'c' && (next == '/' || next == '\\'));
    case '\'':
    case '"': {
        /* The shared prefix [\s);]{0,13}+, then each rule's first literal, or
         * \d(?<=waitfor delay '\d). */
        Py_ssize_t j = i + 1, end = i + 14;
        Py_UCS4 d;
        while (j < end && ((d = at(t, j)) == ')' || d == ';' || is_space(d))) {
            j++;
        }
        return any_starts(t, j, AFTER_QUOTE) ||
               (at(t, j) == '$' && any_starts(t, j + 1, NOSQL_OPERATORS)) ||
               (is_digit(at(t, j)) && ends(t, j, "waitfor delay '"));
    }
    case 'u':
        return starts(t, i + 1, "nion "); /* union select */
    case ';': {
        Py_ssize_t j = skip_blanks(t, i + 1, 10);
        return any_starts(t, j, AFTER_SEMICOLON) || any_starts(t, j, AFTER_SEPARATOR);
    }
    case '|': {
        /* _AFTER_SEPARATOR, sh/bash (in it already), attr\s{0,5}\( */
        Py_ssize_t j = skip_blanks(t, i + 1, 5);
        return any_starts(t, j, AFTER_SEPARATOR) || starts(t, j, "attr");
    }
    case '&':
        /* &&\s{0,5}+ then _AFTER_SEPARATOR */
        return next == '&' && any_starts(t, skip_blanks(t, i + 2, 5), AFTER_SEPARATOR);
    case '`':
        return any_starts(t, skip_blanks(t, i + 1, 5), SHELL);
    case '(':
        /* \d(?<=sleep\(\d|benchmark\(\d), java\.(?<=\bt\(java\.) */
        return (is_digit(next) && (ends(t, i, "sleep") || ends(t, i, "benchmark"))) ||
               (at(t, i - 1) == 't' && starts(t, i + 1, "java."));
    case '.':
        /* \. then a slash ([/\\] or %...), %2e, %252e, ini (boot.ini, win.ini),
         * _ (a dunder chain), __globals__ ... */
        if (next == '.') {
            Py_UCS4 after = at(t, i + 2);
            return after == '/' || after == '\\' || after == '%';
        }
        return starts(t, i + 1, "%2") || starts(t, i + 1, "ini") || next == '_';
    case '%':
        return any_starts(t, i + 1, AFTER_PERCENT);
    case '/':
        return any_starts(t, i + 1, AFTER_SLASH);
    case '$':
        /* \(\s{0,5}shell, \{ then (ifs\}, \s{0,5}+lookup, \s{0,5}+::-, or
         * [^{}]{0,20}\$\{ nesting), where\b */
        if (next == '{') {
            if (starts(t, i + 2, "ifs}") || any_starts(t, skip_blanks(t, i + 2, 5), LOOKUPS)) {
                return 1;
            }
            for (Py_ssize_t j = i + 2; j <= i + 22 && j < t->n; j++) {
                Py_UCS4 d = at(t, j);
                if (d == '$' && at(t, j + 1) == '{') {
                    return 1;
                }
                if (d == '{' || d == '}') {
                    return 0;
                }
            }
            return 0;
        }
        return next == '(' || starts(t, i + 1, "where");
    case '{': {
        /* \{\s{0,5}+(config|self|...) */
        if (next == '{') {
            return any_starts(t, skip_blanks(t, i + 2, 5), TEMPLATE_GLOBALS);
        }
        /* [\s\d](?<=[{$#*@]\{[\s\d])\s{0,4}+\d{0,10}+\s{0,5}+[*+\-/%]: every
         * repetition is possessive, so these skips are exactly re's. */
        Py_UCS4 before = at(t, i - 1);
        if (!((is_space(next) || is_digit(next)) &&
              (before == '{' || before == '$' || before == '#' || before == '*' ||
               before == '@'))) {
            return 0;
        }
        Py_ssize_t j = skip_blanks(t, i + 2, 4), end = j + 10;
        while (j < end && is_digit(at(t, j))) {
            j++;
        }
        Py_UCS4 op = at(t, skip_blanks(t, j, 5));
        return op == '*' || op == '+' || op == '-' || op == '/' || op == '%';
    }
    default:
        return 0;
    }
}

static const char ANCHORS[] = "<:'\"u;|&`(.%/${";
static char is_anchor[128]; /* filled once, at import */

/* The loop of first_candidate(), inlined with a constant kind so that each
 * kind gets its own loop without a switch per character. */
static inline Py_ALWAYS_INLINE Py_ssize_t
first(const Text *t, int kind)
{
    /* A copy with a constant kind: every inlined read below gets it too. */
    const Text local = {kind, t->data, t->n};
    for (Py_ssize_t i = 0; i < local.n; i++) {
        Py_UCS4 c = PyUnicode_READ(kind, local.data, i);
        if (c < 128 && is_anchor[c] && candidate(&local, i, c)) {
            return i;
        }
    }
    return -1;
}

static PyObject *
first_candidate(PyObject *module, PyObject *arg)
{
    (void)module;
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "first_candidate() takes a str");
        return NULL;
    }
    Text t = {PyUnicode_KIND(arg), PyUnicode_DATA(arg), PyUnicode_GET_LENGTH(arg)};
    Py_ssize_t found;
    switch (t.kind) {
    case PyUnicode_1BYTE_KIND:
        found = first(&t, PyUnicode_1BYTE_KIND);
        break;
    case PyUnicode_2BYTE_KIND:
        found = first(&t, PyUnicode_2BYTE_KIND);
        break;
    default:
        found = first(&t, PyUnicode_4BYTE_KIND);
        break;
    }
    return PyLong_FromSsize_t(found);
}

static PyMethodDef methods[] = {
    {"first_candidate", first_candidate, METH_O,
     "The first position of a lowered text where a signature rule could match, else -1."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "wsguard.core._signature_scan",
    "The attack-signature scanner's prefilter in C.", 0, methods, NULL, NULL, NULL, NULL,
};

PyMODINIT_FUNC
PyInit__signature_scan(void)
{
    for (const char *a = ANCHORS; *a; a++) {
        is_anchor[(unsigned char)*a] = 1;
    }
    return PyModuleDef_Init(&module);
}
