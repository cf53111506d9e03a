/*
 * streams._native: a columnar scanner for inference events, the first path of streams.decode.
 *
 * Parsing JSON into Python objects and then copying them into numpy columns costs ~5x more than
 * the parsing itself; this scanner writes numeric features and probabilities straight into the
 * caller's float64 buffers and builds Python objects only for the columns that stay Python
 * objects (ids, categories, predictions, labels, ts).
 *
 * It is deliberately narrow. It accepts only messages it can read exactly as the general path
 * (orjson + validation) reads them, and *refuses* everything else: Scanner.scan returns None and
 * the caller decodes the part with the general paths, which explain every problem. Refused, among
 * others: keys with escapes, unknown features or classes, duplicate keys, a number where a string
 * is expected (and the reverse), numbers too large for float64, integer predictions, labels or ts
 * beyond int64, probability arrays of the wrong length, another model_id.
 *
 * Numbers are correctly rounded, as orjson and Python's float() round them: Clinger's fast path,
 * then Eisel-Lemire (Lemire, "Number parsing at a gigabyte per second", 2021, as in Go's strconv),
 * then strtod for the rare rest (more than 19 significant digits, ambiguous halfway cases).
 *
 * A message that is not bytes, longer than max_bytes or not valid UTF-8 is refused too.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "_pow10.h"

#define OK 0
#define REFUSE 1 /* not for this path: the caller falls back, no Python error set */
#define ERROR -1 /* a Python error is set */
#define MAX_DEPTH 64

/* ------------------------------------------------------------------------------------------ */
/* Names: a small open-addressing table of byte strings -> index                               */

typedef struct {
    Py_ssize_t n;
    char **name;
    Py_ssize_t *len;
    Py_ssize_t mask;
    Py_ssize_t *slot; /* -1 empty, else index */
} Names;

static uint64_t
fnv1a(const char *s, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ull;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static void
names_free(Names *t)
{
    if (t->name) {
        for (Py_ssize_t i = 0; i < t->n; i++) PyMem_Free(t->name[i]);
    }
    PyMem_Free(t->name);
    PyMem_Free(t->len);
    PyMem_Free(t->slot);
    memset(t, 0, sizeof(*t));
}

/* seq: a sequence of bytes; duplicates are a ValueError */
static int
names_init(Names *t, PyObject *seq, const char *what)
{
    memset(t, 0, sizeof(*t));
    PyObject *fast = PySequence_Fast(seq, "names must be a sequence of bytes");
    if (!fast) return ERROR;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(fast);
    Py_ssize_t cap = 8;
    while (cap < 2 * n + 2) cap <<= 1;
    t->name = PyMem_Calloc(n ? n : 1, sizeof(char *));
    t->len = PyMem_Calloc(n ? n : 1, sizeof(Py_ssize_t));
    t->slot = PyMem_Malloc(cap * sizeof(Py_ssize_t));
    if (!t->name || !t->len || !t->slot) {
        Py_DECREF(fast);
        names_free(t);
        PyErr_NoMemory();
        return ERROR;
    }
    t->n = n;
    t->mask = cap - 1;
    for (Py_ssize_t i = 0; i < cap; i++) t->slot[i] = -1;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PySequence_Fast_GET_ITEM(fast, i);
        char *s;
        Py_ssize_t len;
        if (PyBytes_AsStringAndSize(b, &s, &len) < 0) {
            Py_DECREF(fast);
            names_free(t);
            return ERROR;
        }
        t->name[i] = PyMem_Malloc(len ? len : 1);
        if (!t->name[i]) {
            Py_DECREF(fast);
            names_free(t);
            PyErr_NoMemory();
            return ERROR;
        }
        memcpy(t->name[i], s, len);
        t->len[i] = len;
        Py_ssize_t h = (Py_ssize_t)(fnv1a(s, len) & (uint64_t)t->mask);
        while (t->slot[h] >= 0) {
            Py_ssize_t o = t->slot[h];
            if (t->len[o] == len && memcmp(t->name[o], s, len) == 0) {
                Py_DECREF(fast);
                names_free(t);
                PyErr_Format(PyExc_ValueError, "duplicate %s name", what);
                return ERROR;
            }
            h = (h + 1) & t->mask;
        }
        t->slot[h] = i;
    }
    Py_DECREF(fast);
    return OK;
}

/* keys are short: a loop beats a call to memcmp */
static inline int
same_bytes(const char *a, const char *b, Py_ssize_t n)
{
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != b[i]) return 0;
    }
    return 1;
}

/* index of s, or -1; `guess` is tried first (producers send keys in one order) */
static inline Py_ssize_t
names_find(const Names *t, const char *s, Py_ssize_t len, Py_ssize_t guess)
{
    if (guess >= 0 && guess < t->n && t->len[guess] == len && same_bytes(t->name[guess], s, len)) return guess;
    Py_ssize_t h = (Py_ssize_t)(fnv1a(s, len) & (uint64_t)t->mask);
    for (;;) {
        Py_ssize_t o = t->slot[h];
        if (o < 0) return -1;
        if (t->len[o] == len && memcmp(t->name[o], s, len) == 0) return o;
        h = (h + 1) & t->mask;
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Numbers                                                                                      */

static const double EXACT_POW10[23] = {1e0,  1e1,  1e2,  1e3,  1e4,  1e5,  1e6,  1e7,  1e8,  1e9,  1e10, 1e11,
                                       1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22};

/* Eisel-Lemire: m * 10^e10 correctly rounded, m != 0; 0 if it cannot decide (the caller asks strtod) */
static int
eisel_lemire(uint64_t man, int64_t e10, int neg, double *out)
{
    if (e10 < POW10_MIN || e10 > POW10_MAX) return 0;
    int clz = __builtin_clzll(man);
    man <<= clz;
    uint64_t ret_exp2 = (uint64_t)(((217706 * e10) >> 16) + 64 + 1023) - (uint64_t)clz;
    const uint64_t *pw = POW10_128[e10 - POW10_MIN];
    unsigned __int128 x = (unsigned __int128)man * pw[1];
    uint64_t x_hi = (uint64_t)(x >> 64), x_lo = (uint64_t)x;
    if ((x_hi & 0x1FF) == 0x1FF && x_lo + man < man) {
        unsigned __int128 y = (unsigned __int128)man * pw[0];
        uint64_t y_hi = (uint64_t)(y >> 64), y_lo = (uint64_t)y;
        uint64_t merged_hi = x_hi, merged_lo = x_lo + y_hi;
        if (merged_lo < x_lo) merged_hi++;
        if ((merged_hi & 0x1FF) == 0x1FF && merged_lo + 1 == 0 && y_lo + man < man) return 0;
        x_hi = merged_hi;
        x_lo = merged_lo;
    }
    uint64_t msb = x_hi >> 63;
    uint64_t ret_man = x_hi >> (msb + 9);
    ret_exp2 -= 1 ^ msb;
    if (x_lo == 0 && (x_hi & 0x1FF) == 0 && (ret_man & 3) == 1) return 0;
    ret_man += ret_man & 1;
    ret_man >>= 1;
    if (ret_man >> 53) {
        ret_man >>= 1;
        ret_exp2 += 1;
    }
    if (ret_exp2 - 1 >= 0x7FF - 1) return 0; /* subnormal or infinite: strtod decides */
    uint64_t bits = ret_exp2 << 52 | (ret_man & 0x000FFFFFFFFFFFFFull);
    if (neg) bits |= 0x8000000000000000ull;
    memcpy(out, &bits, sizeof(bits));
    return 1;
}

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define SWAR 1
/* eight ASCII digits at once (as in simdjson and fast_float): most of a number's time is its digits */
static inline int
eight_digits(const char *p, uint64_t *out)
{
    uint64_t v;
    memcpy(&v, p, 8);
    if ((((v + 0x4646464646464646ull) | (v - 0x3030303030303030ull)) & 0x8080808080808080ull) != 0) return 0;
    v -= 0x3030303030303030ull;
    v = (v * 10) + (v >> 8);
    v = (((v & 0x000000FF000000FFull) * 0x000F424000000064ull) +
         (((v >> 16) & 0x000000FF000000FFull) * 0x0000271000000001ull)) >> 32;
    *out = v;
    return 1;
}
#else
#define SWAR 0
#endif

typedef struct {
    double value;
    int is_int;   /* no fraction, no exponent */
    int int_fits; /* is_int and the value fits int64 (then ival holds it) */
    int64_t ival;
} Number;

/* A JSON number at *pp; REFUSE if it is not one or does not fit a finite float64. */
static int
parse_number(const char **pp, const char *end, Number *num)
{
    const char *p = *pp, *start = p;
    int neg = 0;
    if (p < end && *p == '-') {
        neg = 1;
        p++;
    }
    if (p >= end) return REFUSE;
    uint64_t man = 0;
    int digits = 0;        /* significant digits kept in man */
    int64_t dropped = 0;   /* integer digits beyond 19, each one more power of ten */
    int truncated = 0;     /* a nonzero digit was dropped */
    int64_t e10 = 0;
    if (*p == '0') {
        p++;
        if (p < end && *p >= '0' && *p <= '9') return REFUSE; /* leading zero */
    }
    else if (*p >= '1' && *p <= '9') {
        while (p < end && *p >= '0' && *p <= '9') {
            if (digits < 19) {
                man = man * 10 + (uint64_t)(*p - '0');
                digits++;
            }
            else {
                dropped++;
                truncated |= *p != '0';
            }
            p++;
        }
    }
    else {
        return REFUSE;
    }
    int is_int = 1;
    if (p < end && *p == '.') {
        is_int = 0;
        p++;
        if (p >= end || *p < '0' || *p > '9') return REFUSE;
        if (man == 0) {
            while (p < end && *p == '0') {
                e10--; /* leading zeros of the fraction are not significant */
                p++;
            }
        }
#if SWAR
        uint64_t eight;
        while (digits <= 11 && end - p >= 8 && eight_digits(p, &eight)) {
            man = man * 100000000u + eight;
            digits += 8;
            e10 -= 8;
            p += 8;
        }
#endif
        while (p < end && *p >= '0' && *p <= '9') {
            if (man == 0 && *p == '0') {
                e10--; /* leading zeros of the fraction are not significant */
            }
            else if (digits < 19) {
                man = man * 10 + (uint64_t)(*p - '0');
                digits++;
                e10--;
            }
            else {
                truncated |= *p != '0';
            }
            p++;
        }
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        is_int = 0;
        p++;
        int eneg = 0;
        if (p < end && (*p == '+' || *p == '-')) {
            eneg = *p == '-';
            p++;
        }
        if (p >= end || *p < '0' || *p > '9') return REFUSE;
        int64_t ex = 0;
        while (p < end && *p >= '0' && *p <= '9') {
            if (ex < 100000) ex = ex * 10 + (*p - '0');
            p++;
        }
        e10 += eneg ? -ex : ex;
    }
    *pp = p;
    num->is_int = is_int;
    num->int_fits = 0;
    e10 += dropped;
    if (is_int && !dropped && !truncated) {
        if (!neg && man <= (uint64_t)INT64_MAX) {
            num->int_fits = 1;
            num->ival = (int64_t)man;
        }
        else if (neg && man <= (uint64_t)INT64_MAX + 1) {
            num->int_fits = 1;
            num->ival = man == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)man;
        }
    }
    double v;
    if (man == 0 && !truncated) {
        v = neg && !is_int ? -0.0 : 0.0; /* orjson reads -0 as the int 0, -0.0 as a float */
    }
    else if (!truncated && man <= (1ull << 53) && e10 >= -22 && e10 <= 22) {
        /* Clinger: both operands exact, one correctly rounded operation */
        v = (double)man;
        v = e10 < 0 ? v / EXACT_POW10[-e10] : v * EXACT_POW10[e10];
        if (neg) v = -v;
    }
    else if (truncated || !eisel_lemire(man, e10, neg, &v)) {
        Py_ssize_t len = p - start;
        char buf[400];
        if (len >= (Py_ssize_t)sizeof(buf)) return REFUSE;
        memcpy(buf, start, len);
        buf[len] = 0;
        v = strtod(buf, NULL);
    }
    if (!isfinite(v)) return REFUSE; /* the general path counts it as non_finite */
    num->value = v;
    return OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Strings and the rest of JSON                                                                 */

static inline void
skip_ws(const char **pp, const char *end)
{
    const char *p = *pp;
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')) p++;
    *pp = p;
}

static inline int
hex4(const char *p, unsigned *out)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = p[i];
        v <<= 4;
        if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
        else return 0;
    }
    *out = v;
    return 1;
}

/*
 * The string at *pp (which is at its opening quote): *s, *len are its raw contents, *esc whether it
 * holds escapes. Escapes are checked (a lone surrogate is refused, as orjson refuses it).
 */
static int
scan_string(const char **pp, const char *end, const char **s, Py_ssize_t *len, int *esc)
{
    const char *p = *pp + 1;
    *s = p;
    *esc = 0;
    for (;;) {
        /* the common case: a run of plain bytes */
        while (p < end && *p != '"' && *p != '\\' && (unsigned char)*p >= 0x20) p++;
        if (p >= end) return REFUSE;
        if (*p == '"') break;
        if ((unsigned char)*p < 0x20) return REFUSE;
        *esc = 1;
        p++;
        if (p >= end) return REFUSE;
        switch (*p) {
        case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
            p++;
            break;
        case 'u': {
            unsigned cp;
            if (end - p < 5 || !hex4(p + 1, &cp)) return REFUSE;
            p += 5;
            if (cp >= 0xDC00 && cp <= 0xDFFF) return REFUSE;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                unsigned lo;
                if (end - p < 6 || p[0] != '\\' || p[1] != 'u' || !hex4(p + 2, &lo)) return REFUSE;
                if (lo < 0xDC00 || lo > 0xDFFF) return REFUSE;
                p += 6;
            }
            break;
        }
        default:
            return REFUSE;
        }
    }
    *len = p - *s;
    *pp = p + 1;
    return OK;
}

static PyObject *
make_string(const char *s, Py_ssize_t len, int esc)
{
    if (!esc) return PyUnicode_DecodeUTF8(s, len, NULL);
    char *buf = PyMem_Malloc(len ? len : 1);
    if (!buf) return PyErr_NoMemory();
    Py_ssize_t o = 0;
    for (Py_ssize_t i = 0; i < len;) {
        char c = s[i];
        if (c != '\\') {
            buf[o++] = c;
            i++;
            continue;
        }
        char e = s[i + 1];
        i += 2;
        switch (e) {
        case 'b': buf[o++] = '\b'; break;
        case 'f': buf[o++] = '\f'; break;
        case 'n': buf[o++] = '\n'; break;
        case 'r': buf[o++] = '\r'; break;
        case 't': buf[o++] = '\t'; break;
        case 'u': {
            unsigned cp = 0, lo = 0;
            hex4(s + i, &cp); /* checked by scan_string */
            i += 4;
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                hex4(s + i + 2, &lo);
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            if (cp < 0x80) {
                buf[o++] = (char)cp;
            }
            else if (cp < 0x800) {
                buf[o++] = (char)(0xC0 | (cp >> 6));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            }
            else if (cp < 0x10000) {
                buf[o++] = (char)(0xE0 | (cp >> 12));
                buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            }
            else {
                buf[o++] = (char)(0xF0 | (cp >> 18));
                buf[o++] = (char)(0x80 | ((cp >> 12) & 0x3F));
                buf[o++] = (char)(0x80 | ((cp >> 6) & 0x3F));
                buf[o++] = (char)(0x80 | (cp & 0x3F));
            }
            break;
        }
        default: buf[o++] = e; /* " \ / */
        }
    }
    PyObject *r = PyUnicode_DecodeUTF8(buf, o, NULL);
    PyMem_Free(buf);
    return r;
}

/* Whether [p, end) is valid UTF-8, as Python's strict decoder has it (no overlongs, no surrogates). */
static int
valid_utf8(const unsigned char *p, const unsigned char *end)
{
    while (p < end) {
#if SWAR
        while (end - p >= 8) { /* ASCII runs, eight bytes at a time */
            uint64_t v;
            memcpy(&v, p, 8);
            if (v & 0x8080808080808080ull) break;
            p += 8;
        }
        if (p >= end) break;
#endif
        unsigned char c = *p;
        if (c < 0x80) {
            p++;
            continue;
        }
        Py_ssize_t left = end - p;
        if (c >= 0xC2 && c <= 0xDF) {
            if (left < 2 || (p[1] & 0xC0) != 0x80) return 0;
            p += 2;
        }
        else if (c >= 0xE0 && c <= 0xEF) {
            unsigned char lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
            if (left < 3 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80) return 0;
            p += 3;
        }
        else if (c >= 0xF0 && c <= 0xF4) {
            unsigned char lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
            if (left < 4 || p[1] < lo || p[1] > hi || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
            p += 4;
        }
        else {
            return 0;
        }
    }
    return 1;
}

static int
literal(const char **pp, const char *end, const char *lit, Py_ssize_t n)
{
    if (end - *pp < n || memcmp(*pp, lit, n) != 0) return REFUSE;
    *pp += n;
    return OK;
}

/* Skip one JSON value, checking it as orjson would. */
static int
skip_value(const char **pp, const char *end, int depth)
{
    const char *p = *pp;
    if (p >= end) return REFUSE;
    if (depth > MAX_DEPTH) return REFUSE;
    switch (*p) {
    case '"': {
        const char *s;
        Py_ssize_t len;
        int esc;
        if (scan_string(pp, end, &s, &len, &esc)) return REFUSE;
        return OK;
    }
    case '{':
    case '[': {
        char close = *p == '{' ? '}' : ']';
        int obj = *p == '{';
        p++;
        skip_ws(&p, end);
        if (p < end && *p == close) {
            *pp = p + 1;
            return OK;
        }
        for (;;) {
            if (obj) {
                const char *s;
                Py_ssize_t len;
                int esc;
                if (p >= end || *p != '"' || scan_string(&p, end, &s, &len, &esc)) return REFUSE;
                skip_ws(&p, end);
                if (p >= end || *p != ':') return REFUSE;
                p++;
                skip_ws(&p, end);
            }
            if (skip_value(&p, end, depth + 1)) return REFUSE;
            skip_ws(&p, end);
            if (p >= end) return REFUSE;
            if (*p == ',') {
                p++;
                skip_ws(&p, end);
                continue;
            }
            if (*p != close) return REFUSE;
            *pp = p + 1;
            return OK;
        }
    }
    case 't': return literal(pp, end, "true", 4);
    case 'f': return literal(pp, end, "false", 5);
    case 'n': return literal(pp, end, "null", 4);
    default: {
        Number num;
        return parse_number(pp, end, &num);
    }
    }
}

/* A key and its colon: *s, *len; keys with escapes are refused (the general path reads them). */
static inline int
scan_key(const char **pp, const char *end, const char **s, Py_ssize_t *len)
{
    int esc;
    if (*pp >= end || **pp != '"' || scan_string(pp, end, s, len, &esc) || esc) return REFUSE;
    skip_ws(pp, end);
    if (*pp >= end || **pp != ':') return REFUSE;
    (*pp)++;
    skip_ws(pp, end);
    return OK;
}

/* After a member: OK and *more=1 at ',', *more=0 at the closing brace or bracket. */
static inline int
next_member(const char **pp, const char *end, char close, int *more)
{
    skip_ws(pp, end);
    if (*pp >= end) return REFUSE;
    if (**pp == ',') {
        (*pp)++;
        skip_ws(pp, end);
        *more = 1;
        return OK;
    }
    if (**pp != close) return REFUSE;
    (*pp)++;
    *more = 0;
    return OK;
}

/* ------------------------------------------------------------------------------------------ */
/* The scanner                                                                                  */

typedef struct {
    PyObject_HEAD
    char *model_id;
    Py_ssize_t model_id_len;
    Py_ssize_t max_bytes; /* longer messages are refused: the general path makes them dead letters */
    Names features; /* numeric names first, then categorical */
    Py_ssize_t k;   /* numeric features */
    Py_ssize_t kc;  /* categorical features */
    Names classes;
    uint32_t *seen; /* per feature, then per class: the stamp of the message that last set it */
    Py_ssize_t n_seen;
    uint32_t stamp;
} Scanner;

static void
Scanner_dealloc(Scanner *self)
{
    PyMem_Free(self->model_id);
    names_free(&self->features);
    names_free(&self->classes);
    PyMem_Free(self->seen);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
Scanner_init(Scanner *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"model_id", "numeric", "categorical", "classes", "max_bytes", NULL};
    const char *model_id;
    Py_ssize_t model_id_len, max_bytes;
    PyObject *numeric, *categorical, *classes;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y#OOOn", kwlist, &model_id, &model_id_len, &numeric, &categorical,
                                     &classes, &max_bytes))
        return -1;
    if (self->model_id) {
        PyErr_SetString(PyExc_TypeError, "Scanner is already initialized");
        return -1;
    }
    PyObject *all = PySequence_Concat(numeric, categorical);
    if (!all) return -1;
    Py_ssize_t k = PySequence_Size(numeric), kc = PySequence_Size(categorical);
    int rc = k < 0 || kc < 0 ? ERROR : names_init(&self->features, all, "feature");
    Py_DECREF(all);
    if (rc) return -1;
    if (names_init(&self->classes, classes, "class")) return -1;
    self->k = k;
    self->kc = kc;
    self->n_seen = self->features.n + self->classes.n;
    self->seen = PyMem_Calloc(self->n_seen ? self->n_seen : 1, sizeof(uint32_t));
    self->model_id = PyMem_Malloc(model_id_len ? model_id_len : 1);
    if (!self->seen || !self->model_id) {
        PyErr_NoMemory();
        return -1;
    }
    memcpy(self->model_id, model_id, model_id_len);
    self->model_id_len = model_id_len;
    self->max_bytes = max_bytes;
    return 0;
}

/* prediction and label: null, a string, or a number (int when integral and within int64) */
static int
target_value(const char **pp, const char *end, PyObject **out)
{
    const char *p = *pp;
    if (p >= end) return REFUSE;
    if (*p == 'n') {
        *out = NULL; /* stays None */
        return literal(pp, end, "null", 4);
    }
    if (*p == '"') {
        const char *s;
        Py_ssize_t len;
        int esc;
        if (scan_string(pp, end, &s, &len, &esc)) return REFUSE;
        *out = make_string(s, len, esc);
        return *out ? OK : ERROR;
    }
    Number num;
    if (parse_number(pp, end, &num)) return REFUSE;
    if (num.is_int && !num.int_fits) return REFUSE;
    *out = num.is_int ? PyLong_FromLongLong(num.ival) : PyFloat_FromDouble(num.value);
    return *out ? OK : ERROR;
}

static inline void
put(PyObject *list, Py_ssize_t i, PyObject *v)
{
    /* replaces the None the list was made with */
    PyObject *old = PyList_GET_ITEM(list, i);
    PyList_SET_ITEM(list, i, v);
    Py_DECREF(old);
}

enum {
    F_EVENT_ID = 1,
    F_TS = 2,
    F_MODEL_ID = 4,
    F_MODEL_VERSION = 8,
    F_CLIENT_ID = 16,
    F_FEATURES = 32,
    F_PREDICTION = 64,
    F_LABEL = 128,
    F_PROBABILITIES = 256,
};
#define REQUIRED (F_EVENT_ID | F_TS | F_MODEL_ID | F_FEATURES)

typedef struct {
    Py_ssize_t n;
    double *x;         /* n x k */
    double *proba;     /* n x n_classes */
    PyObject *event_id, *ts, *client_id, *prediction, *label;
    PyObject **categorical; /* kc lists */
} Out;

#define TRY(expr)                    \
    do {                             \
        int rc_ = (expr);            \
        if (rc_) return rc_;         \
    } while (0)

/* A finite number into *out, or null (leaving *out as it is: NaN, missing). */
static inline int
number_or_null(const char **pp, const char *end, double *out)
{
    if (*pp < end && **pp == 'n') return literal(pp, end, "null", 4);
    Number num;
    TRY(parse_number(pp, end, &num));
    *out = num.value;
    return OK;
}

static int
scan_features(Scanner *self, const char **pp, const char *end, Out *o, Py_ssize_t i)
{
    const char *p = *pp;
    if (p >= end || *p != '{') return REFUSE;
    p++;
    skip_ws(&p, end);
    int more = 1;
    if (p < end && *p == '}') {
        p++;
        more = 0;
    }
    Py_ssize_t j = -1;
    double *row = o->x + i * self->k;
    while (more) {
        const char *s;
        Py_ssize_t len;
        TRY(scan_key(&p, end, &s, &len));
        j = names_find(&self->features, s, len, j + 1);
        if (j < 0 || self->seen[j] == self->stamp) return REFUSE; /* unknown or repeated */
        self->seen[j] = self->stamp;
        if (p >= end) return REFUSE;
        if (j < self->k) {
            TRY(number_or_null(&p, end, &row[j]));
        }
        else {
            PyObject *v;
            if (*p == '"') {
                const char *vs;
                Py_ssize_t vlen;
                int esc;
                TRY(scan_string(&p, end, &vs, &vlen, &esc));
                v = make_string(vs, vlen, esc);
                if (!v) return ERROR;
            }
            else if (*p == 't') {
                TRY(literal(&p, end, "true", 4));
                v = Py_NewRef(Py_True);
            }
            else if (*p == 'f') {
                TRY(literal(&p, end, "false", 5));
                v = Py_NewRef(Py_False);
            }
            else {
                TRY(literal(&p, end, "null", 4)); /* a number here is the general path's wrong_type */
                v = NULL;
            }
            if (v) put(o->categorical[j - self->k], i, v);
        }
        TRY(next_member(&p, end, '}', &more));
    }
    *pp = p;
    return OK;
}

static int
scan_probabilities(Scanner *self, const char **pp, const char *end, Out *o, Py_ssize_t i)
{
    const char *p = *pp;
    Py_ssize_t nc = self->classes.n;
    double *row = o->proba + i * nc;
    uint32_t *seen = self->seen + self->features.n;
    if (p >= end) return REFUSE;
    if (*p == 'n') {
        TRY(literal(&p, end, "null", 4));
        *pp = p;
        return OK;
    }
    if (!nc) return REFUSE; /* a schema without classes: the general path takes the confidence */
    int more = 1;
    if (*p == '{') {
        p++;
        skip_ws(&p, end);
        if (p < end && *p == '}') {
            p++;
            more = 0;
        }
        Py_ssize_t j = -1;
        while (more) {
            const char *s;
            Py_ssize_t len;
            TRY(scan_key(&p, end, &s, &len));
            j = names_find(&self->classes, s, len, j + 1);
            if (j < 0 || seen[j] == self->stamp) return REFUSE;
            seen[j] = self->stamp;
            TRY(number_or_null(&p, end, &row[j]));
            TRY(next_member(&p, end, '}', &more));
        }
    }
    else if (*p == '[') {
        p++;
        skip_ws(&p, end);
        if (p < end && *p == ']') {
            p++;
            more = 0;
        }
        Py_ssize_t j = 0;
        while (more) {
            if (j >= nc) return REFUSE; /* misaligned: the general path counts it */
            TRY(number_or_null(&p, end, &row[j]));
            j++;
            TRY(next_member(&p, end, ']', &more));
        }
        if (j != nc) return REFUSE;
    }
    else {
        return REFUSE;
    }
    *pp = p;
    return OK;
}

static int
scan_one(Scanner *self, const char *p, const char *end, Out *o, Py_ssize_t i)
{
    unsigned have = 0;
    skip_ws(&p, end);
    if (p >= end || *p != '{') return REFUSE;
    p++;
    skip_ws(&p, end);
    int more = !(p < end && *p == '}');
    while (more) {
        const char *s;
        Py_ssize_t len;
        TRY(scan_key(&p, end, &s, &len));
        unsigned field = 0;
        switch (len) {
        case 2:
            if (memcmp(s, "ts", 2) == 0) field = F_TS;
            break;
        case 5:
            if (memcmp(s, "label", 5) == 0) field = F_LABEL;
            break;
        case 8:
            if (memcmp(s, "event_id", 8) == 0) field = F_EVENT_ID;
            else if (memcmp(s, "model_id", 8) == 0) field = F_MODEL_ID;
            else if (memcmp(s, "features", 8) == 0) field = F_FEATURES;
            break;
        case 9:
            if (memcmp(s, "client_id", 9) == 0) field = F_CLIENT_ID;
            break;
        case 10:
            if (memcmp(s, "prediction", 10) == 0) field = F_PREDICTION;
            break;
        case 13:
            if (memcmp(s, "model_version", 13) == 0) field = F_MODEL_VERSION;
            else if (memcmp(s, "probabilities", 13) == 0) field = F_PROBABILITIES;
            break;
        }
        if (field & have) return REFUSE; /* a repeated field: the general path keeps the last one */
        have |= field;
        if (p >= end) return REFUSE;
        const char *vs;
        Py_ssize_t vlen;
        int esc;
        PyObject *v = NULL;
        switch (field) {
        case 0:
            TRY(skip_value(&p, end, 1));
            break;
        case F_EVENT_ID:
            if (*p != '"') return REFUSE;
            TRY(scan_string(&p, end, &vs, &vlen, &esc));
            if (!vlen) return REFUSE;
            if (!(v = make_string(vs, vlen, esc))) return ERROR;
            put(o->event_id, i, v);
            break;
        case F_TS:
            if (*p == '"') {
                TRY(scan_string(&p, end, &vs, &vlen, &esc));
                if (!(v = make_string(vs, vlen, esc))) return ERROR;
            }
            else {
                Number num;
                TRY(parse_number(&p, end, &num));
                if (num.is_int && !num.int_fits) return REFUSE;
                v = num.is_int ? PyLong_FromLongLong(num.ival) : PyFloat_FromDouble(num.value);
                if (!v) return ERROR;
            }
            put(o->ts, i, v);
            break;
        case F_MODEL_ID:
            if (*p != '"') return REFUSE;
            TRY(scan_string(&p, end, &vs, &vlen, &esc));
            if (esc || vlen != self->model_id_len || memcmp(vs, self->model_id, vlen) != 0) return REFUSE;
            break;
        case F_MODEL_VERSION:
        case F_CLIENT_ID:
            if (*p == 'n') {
                TRY(literal(&p, end, "null", 4));
                break;
            }
            if (*p != '"') return REFUSE;
            TRY(scan_string(&p, end, &vs, &vlen, &esc));
            if (field == F_CLIENT_ID) {
                if (!(v = make_string(vs, vlen, esc))) return ERROR;
                put(o->client_id, i, v);
            }
            break;
        case F_FEATURES:
            TRY(scan_features(self, &p, end, o, i));
            break;
        case F_PREDICTION:
        case F_LABEL:
            TRY(target_value(&p, end, &v));
            if (v) put(field == F_PREDICTION ? o->prediction : o->label, i, v);
            break;
        case F_PROBABILITIES:
            TRY(scan_probabilities(self, &p, end, o, i));
            break;
        }
        TRY(next_member(&p, end, '}', &more));
    }
    skip_ws(&p, end);
    if (p != end || (have & REQUIRED) != REQUIRED) return REFUSE;
    return OK;
}

static PyObject *
none_list(Py_ssize_t n)
{
    PyObject *l = PyList_New(n);
    if (!l) return NULL;
    for (Py_ssize_t i = 0; i < n; i++) PyList_SET_ITEM(l, i, Py_NewRef(Py_None));
    return l;
}

static int
writable_doubles(PyObject *obj, Py_buffer *view, Py_ssize_t count, const char *what)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS | PyBUF_FORMAT) < 0) return ERROR;
    if (view->itemsize != 8 || !view->format || strcmp(view->format, "d") != 0 || view->len != count * 8) {
        PyBuffer_Release(view);
        PyErr_Format(PyExc_ValueError, "%s must be a C-contiguous float64 buffer of %zd values", what, count);
        return ERROR;
    }
    return OK;
}

PyDoc_STRVAR(scan_doc,
             "scan(values, start, x, proba)\n--\n\n"
             "Read the messages ``values[start:]`` into rows ``start..`` of ``x`` (float64, n x numeric),\n"
             "and ``proba`` (float64, n x classes), which the caller fills with NaN, ``n = len(values)``,\n"
             " up to the first message this path does not take. Returns ``(n_ok, event_id,\n"
             "ts, client_id, prediction, label, categorical)``: how many messages from ``start`` it took, and\n"
             "their columns as lists (``categorical``: one list per categorical feature). The rows after those\n"
             "of ``x`` and ``proba`` are undefined.");

static PyObject *
Scanner_scan(Scanner *self, PyObject *args)
{
    PyObject *values, *xobj, *pobj;
    Py_ssize_t start;
    if (!PyArg_ParseTuple(args, "O!nOO", &PyList_Type, &values, &start, &xobj, &pobj)) return NULL;
    if (!self->model_id) {
        PyErr_SetString(PyExc_TypeError, "Scanner is not initialized");
        return NULL;
    }
    Py_ssize_t total = PyList_GET_SIZE(values);
    if (start < 0 || start > total) {
        PyErr_SetString(PyExc_ValueError, "start is outside values");
        return NULL;
    }
    Py_buffer xv, pv;
    if (writable_doubles(xobj, &xv, total * self->k, "x")) return NULL;
    if (writable_doubles(pobj, &pv, total * self->classes.n, "proba")) {
        PyBuffer_Release(&xv);
        return NULL;
    }
    PyObject *result = NULL;
    Py_ssize_t n = total - start; /* rows of this call: the lists' length, rows of the buffers from start */
    Out o = {n, (double *)xv.buf + start * self->k, (double *)pv.buf + start * self->classes.n,
             NULL, NULL, NULL, NULL, NULL, NULL};
    o.categorical = PyMem_Calloc(self->kc ? self->kc : 1, sizeof(PyObject *));
    if (!o.categorical) {
        PyErr_NoMemory();
        goto done;
    }
    if (!(o.event_id = none_list(n)) || !(o.ts = none_list(n)) || !(o.client_id = none_list(n)) ||
        !(o.prediction = none_list(n)) || !(o.label = none_list(n)))
        goto done;
    for (Py_ssize_t j = 0; j < self->kc; j++) {
        if (!(o.categorical[j] = none_list(n))) goto done;
    }
    Py_ssize_t n_ok = n;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *b = PyList_GET_ITEM(values, start + i);
        if (++self->stamp == 0) { /* wrapped: forget every mark */
            memset(self->seen, 0, sizeof(uint32_t) * (size_t)self->n_seen);
            self->stamp = 1;
        }
        int rc = REFUSE;
        if (PyBytes_CheckExact(b) && PyBytes_GET_SIZE(b) <= self->max_bytes) {
            const char *p = PyBytes_AS_STRING(b), *end = p + PyBytes_GET_SIZE(b);
            if (valid_utf8((const unsigned char *)p, (const unsigned char *)end)) rc = scan_one(self, p, end, &o, i);
        }
        if (rc == ERROR) goto done;
        if (rc == REFUSE) {
            n_ok = i;
            break;
        }
    }
    {
        PyObject *cats = PyList_New(self->kc);
        if (!cats) goto done;
        for (Py_ssize_t j = 0; j < self->kc; j++) {
            PyList_SET_ITEM(cats, j, o.categorical[j]);
            o.categorical[j] = NULL;
        }
        if (n_ok < n) {
            PyObject *cols[] = {o.event_id, o.ts, o.client_id, o.prediction, o.label};
            for (size_t c = 0; c < sizeof(cols) / sizeof(cols[0]); c++) {
                if (PyList_SetSlice(cols[c], n_ok, n, NULL) < 0) goto done_cats;
            }
            for (Py_ssize_t j = 0; j < self->kc; j++) {
                if (PyList_SetSlice(PyList_GET_ITEM(cats, j), n_ok, n, NULL) < 0) goto done_cats;
            }
        }
        result = Py_BuildValue("nOOOOOO", n_ok, o.event_id, o.ts, o.client_id, o.prediction, o.label, cats);
    done_cats:
        Py_DECREF(cats);
    }
done:
    Py_XDECREF(o.event_id);
    Py_XDECREF(o.ts);
    Py_XDECREF(o.client_id);
    Py_XDECREF(o.prediction);
    Py_XDECREF(o.label);
    if (o.categorical) {
        for (Py_ssize_t j = 0; j < self->kc; j++) Py_XDECREF(o.categorical[j]);
        PyMem_Free(o.categorical);
    }
    PyBuffer_Release(&xv);
    PyBuffer_Release(&pv);
    return result;
}

PyDoc_STRVAR(parse_float_doc,
             "parse_float(token)\n--\n\n"
             "The JSON number ``token`` (bytes) as this scanner reads it, or ``None`` if it refuses it (tests).");

static PyObject *
parse_float(PyObject *module, PyObject *arg)
{
    (void)module;
    char *s;
    Py_ssize_t len;
    if (PyBytes_AsStringAndSize(arg, &s, &len) < 0) return NULL;
    const char *p = s;
    Number num;
    if (parse_number(&p, s + len, &num) || p != s + len) Py_RETURN_NONE;
    return PyFloat_FromDouble(num.value);
}

static PyMethodDef Scanner_methods[] = {
    {"scan", (PyCFunction)Scanner_scan, METH_VARARGS, scan_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(Scanner_doc,
             "Scanner(model_id, numeric, categorical, classes, max_bytes)\n--\n\n"
             "A columnar scanner of one model's inference events; names are bytes (UTF-8).");

static PyTypeObject ScannerType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "streams._native.Scanner",
    .tp_basicsize = sizeof(Scanner),
    .tp_dealloc = (destructor)Scanner_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = Scanner_doc,
    .tp_methods = Scanner_methods,
    .tp_init = (initproc)Scanner_init,
    .tp_new = PyType_GenericNew,
};

static PyMethodDef module_methods[] = {
    {"parse_float", parse_float, METH_O, parse_float_doc},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "streams._native",
    .m_doc = "Columnar scanner of inference events (see _native.c).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    if (PyType_Ready(&ScannerType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module);
    if (!m) return NULL;
    if (PyModule_AddObjectRef(m, "Scanner", (PyObject *)&ScannerType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
