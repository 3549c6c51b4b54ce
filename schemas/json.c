/* json.c — strict recursive-descent JSON parser into the mb_json DOM.
 * Recursion depth is bounded by MB_JSON_MAX_DEPTH, every read by the input
 * length, so hostile input costs at most O(len) memory and time. */
#include "schemas/json.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const unsigned char *s;
    size_t len, pos;
} parser;

static mb_status perr(const parser *p, const char *what)
{
    return mb_errf(MB_ERR_INVALID, "JSON: offset %zu: %s", p->pos, what);
}

static void skip_ws(parser *p)
{
    while (p->pos < p->len) {
        unsigned char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r') break;
        p->pos++;
    }
}

static void free_value(mb_json *v)
{
    switch (v->kind) {
    case MB_JSON_ARR:
        for (size_t i = 0; i < v->n; i++) free_value(&v->elems[i]);
        free(v->elems);
        break;
    case MB_JSON_OBJ:
        for (size_t i = 0; i < v->n; i++) {
            free(v->members[i].key);
            free_value(&v->members[i].value);
        }
        free(v->members);
        break;
    default: free(v->str); break;
    }
    memset(v, 0, sizeof *v);
}

void mb_json_free(mb_json *v)
{
    if (!v) return;
    free_value(v);
    free(v);
}

/* Grow *arr (elements of size sz) so index n fits. */
static mb_status grow(void **arr, size_t *cap, size_t n, size_t sz)
{
    if (n < *cap) return MB_OK;
    size_t nc = *cap ? *cap * 2 : 4;
    void *a = realloc(*arr, nc * sz);
    if (!a) return mb_errf(MB_ERR_NOMEM, "JSON: out of memory");
    *arr = a;
    *cap = nc;
    return MB_OK;
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

static mb_status rd_hex4(parser *p, uint32_t *out)
{
    if (p->len - p->pos < 4) return perr(p, "truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        int h = hexval(p->s[p->pos + (size_t)i]);
        if (h < 0) return perr(p, "bad \\u escape");
        v = v << 4 | (uint32_t)h;
    }
    p->pos += 4;
    *out = v;
    return MB_OK;
}

static size_t put_utf8(char *o, uint32_t c)
{
    if (c < 0x80) { o[0] = (char)c; return 1; }
    if (c < 0x800) { o[0] = (char)(0xC0 | c >> 6); o[1] = (char)(0x80 | (c & 63)); return 2; }
    if (c < 0x10000) {
        o[0] = (char)(0xE0 | c >> 12); o[1] = (char)(0x80 | ((c >> 6) & 63));
        o[2] = (char)(0x80 | (c & 63));
        return 3;
    }
    o[0] = (char)(0xF0 | c >> 18); o[1] = (char)(0x80 | ((c >> 12) & 63));
    o[2] = (char)(0x80 | ((c >> 6) & 63)); o[3] = (char)(0x80 | (c & 63));
    return 4;
}

/* Length of the valid UTF-8 sequence at s (n bytes available), 0 if invalid. */
static size_t utf8_len(const unsigned char *s, size_t n)
{
    unsigned char c = s[0];
    size_t l;
    uint32_t cp, min;
    if (c < 0x80) return 1;
    if ((c & 0xE0) == 0xC0) { l = 2; cp = c & 0x1F; min = 0x80; }
    else if ((c & 0xF0) == 0xE0) { l = 3; cp = c & 0x0F; min = 0x800; }
    else if ((c & 0xF8) == 0xF0) { l = 4; cp = c & 0x07; min = 0x10000; }
    else return 0;
    if (n < l) return 0;
    for (size_t i = 1; i < l; i++) {
        if ((s[i] & 0xC0) != 0x80) return 0;
        cp = cp << 6 | (s[i] & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return l;
}

/* At the opening quote. The unescaped text is never longer than the source. */
static mb_status rd_string(parser *p, char **out, size_t *outlen)
{
    p->pos++;
    size_t start = p->pos, end = start;
    while (end < p->len && p->s[end] != '"') end += p->s[end] == '\\' ? 2 : 1;
    if (end >= p->len) return perr(p, "unterminated string");
    char *o = malloc(end - start + 1);
    if (!o) return mb_errf(MB_ERR_NOMEM, "JSON: out of memory");
    size_t n = 0;
    mb_status st = MB_OK;
    while (p->pos < end) {
        unsigned char c = p->s[p->pos];
        if (c < 0x20) { st = perr(p, "control character in string"); break; }
        if (c != '\\') {
            size_t l = utf8_len(p->s + p->pos, end - p->pos);
            if (!l) { st = perr(p, "invalid UTF-8 in string"); break; }
            memcpy(o + n, p->s + p->pos, l);
            n += l;
            p->pos += l;
            continue;
        }
        p->pos++;
        c = p->s[p->pos++];
        switch (c) {
        case '"': o[n++] = '"'; break;
        case '\\': o[n++] = '\\'; break;
        case '/': o[n++] = '/'; break;
        case 'b': o[n++] = '\b'; break;
        case 'f': o[n++] = '\f'; break;
        case 'n': o[n++] = '\n'; break;
        case 'r': o[n++] = '\r'; break;
        case 't': o[n++] = '\t'; break;
        case 'u': {
            uint32_t cp, lo;
            if ((st = rd_hex4(p, &cp))) break;
            if (cp >= 0xDC00 && cp <= 0xDFFF) { st = perr(p, "lone low surrogate"); break; }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                if (end - p->pos < 6 || p->s[p->pos] != '\\' || p->s[p->pos + 1] != 'u') {
                    st = perr(p, "high surrogate without low surrogate");
                    break;
                }
                p->pos += 2;
                if ((st = rd_hex4(p, &lo))) break;
                if (lo < 0xDC00 || lo > 0xDFFF) { st = perr(p, "bad low surrogate"); break; }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            /* \uXXXX (6 source bytes) yields at most 3 bytes; a pair (12) 4. */
            n += put_utf8(o + n, cp);
            break;
        }
        default: p->pos--; st = perr(p, "bad escape"); break;
        }
        if (st) break;
        if (p->pos > end) { st = perr(p, "bad escape"); break; }
    }
    if (st) {
        free(o);
        return st;
    }
    o[n] = '\0';
    p->pos = end + 1;
    *out = o;
    *outlen = n;
    return MB_OK;
}

static mb_status rd_number(parser *p, mb_json *v)
{
    size_t start = p->pos;
    const unsigned char *s = p->s;
#define DIGIT(i) ((i) < p->len && s[i] >= '0' && s[i] <= '9')
    size_t i = p->pos;
    if (i < p->len && s[i] == '-') i++;
    if (!DIGIT(i)) { p->pos = i; return perr(p, "bad number"); }
    if (s[i] == '0') i++;
    else while (DIGIT(i)) i++;
    if (i < p->len && s[i] == '.') {
        i++;
        if (!DIGIT(i)) { p->pos = i; return perr(p, "bad number fraction"); }
        while (DIGIT(i)) i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-')) i++;
        if (!DIGIT(i)) { p->pos = i; return perr(p, "bad number exponent"); }
        while (DIGIT(i)) i++;
    }
#undef DIGIT
    v->kind = MB_JSON_NUM;
    v->len = i - start;
    v->str = malloc(v->len + 1);
    if (!v->str) return mb_errf(MB_ERR_NOMEM, "JSON: out of memory");
    memcpy(v->str, s + start, v->len);
    v->str[v->len] = '\0';
    p->pos = i;
    return MB_OK;
}

static bool lit(parser *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n)) return false;
    p->pos += n;
    return true;
}

static mb_status rd_value(parser *p, mb_json *v, int depth)
{
    memset(v, 0, sizeof *v);
    skip_ws(p);
    if (p->pos >= p->len) return perr(p, "unexpected end of input");
    unsigned char c = p->s[p->pos];
    mb_status st;
    if (c == '{' || c == '[') {
        if (depth >= MB_JSON_MAX_DEPTH) return perr(p, "nesting too deep");
        bool obj = c == '{';
        v->kind = obj ? MB_JSON_OBJ : MB_JSON_ARR;
        size_t cap = 0;
        p->pos++;
        skip_ws(p);
        if (p->pos < p->len && p->s[p->pos] == (obj ? '}' : ']')) {
            p->pos++;
            return MB_OK;
        }
        for (;;) {
            skip_ws(p);
            if (obj) {
                if ((st = grow((void **)&v->members, &cap, v->n, sizeof *v->members))) return st;
                mb_json_member *m = &v->members[v->n];
                memset(m, 0, sizeof *m);
                if (p->pos >= p->len || p->s[p->pos] != '"') return perr(p, "expected string key");
                if ((st = rd_string(p, &m->key, &m->keylen))) return st;
                v->n++; /* counted now so free_value releases the key */
                skip_ws(p);
                if (p->pos >= p->len || p->s[p->pos] != ':') return perr(p, "expected ':'");
                p->pos++;
                if ((st = rd_value(p, &m->value, depth + 1))) return st;
            } else {
                if ((st = grow((void **)&v->elems, &cap, v->n, sizeof *v->elems))) return st;
                if ((st = rd_value(p, &v->elems[v->n], depth + 1))) {
                    v->n++;
                    return st;
                }
                v->n++;
            }
            skip_ws(p);
            if (p->pos >= p->len) return perr(p, "unexpected end of input");
            c = p->s[p->pos++];
            if (c == ',') continue;
            if (c == (obj ? '}' : ']')) return MB_OK;
            p->pos--;
            return perr(p, obj ? "expected ',' or '}'" : "expected ',' or ']'");
        }
    }
    if (c == '"') {
        v->kind = MB_JSON_STR;
        return rd_string(p, &v->str, &v->len);
    }
    if (c == '-' || (c >= '0' && c <= '9')) return rd_number(p, v);
    if (lit(p, "true")) { v->kind = MB_JSON_BOOL; v->boolean = true; return MB_OK; }
    if (lit(p, "false")) { v->kind = MB_JSON_BOOL; return MB_OK; }
    if (lit(p, "null")) { v->kind = MB_JSON_NULL; return MB_OK; }
    return perr(p, "unexpected character");
}

mb_status mb_json_parse(const char *text, size_t len, mb_json **out)
{
    *out = NULL;
    parser p = {(const unsigned char *)text, len, 0};
    mb_json *v = calloc(1, sizeof *v);
    if (!v) return mb_errf(MB_ERR_NOMEM, "JSON: out of memory");
    mb_status st = rd_value(&p, v, 0);
    if (!st) {
        skip_ws(&p);
        if (p.pos != p.len) st = perr(&p, "trailing characters after JSON value");
    }
    if (st) {
        mb_json_free(v);
        return st;
    }
    *out = v;
    return MB_OK;
}

const mb_json *mb_json_get(const mb_json *obj, const char *key)
{
    if (!obj || obj->kind != MB_JSON_OBJ) return NULL;
    size_t kl = strlen(key);
    for (size_t i = obj->n; i-- > 0;)
        if (obj->members[i].keylen == kl && !memcmp(obj->members[i].key, key, kl))
            return &obj->members[i].value;
    return NULL;
}

static mb_status int_text(const mb_json *v, bool *neg, uint64_t *mag)
{
    if (v->kind != MB_JSON_NUM) return mb_errf(MB_ERR_INVALID, "expected integer, got %s", mb_json_kind_name(v->kind));
    const char *s = v->str;
    *neg = *s == '-';
    if (*neg) s++;
    uint64_t x = 0;
    for (; *s; s++) {
        if (*s < '0' || *s > '9') return mb_errf(MB_ERR_INVALID, "expected integer, got %s", v->str);
        unsigned d = (unsigned)(*s - '0');
        if (x > (UINT64_MAX - d) / 10) return mb_errf(MB_ERR_INVALID, "integer %s out of range", v->str);
        x = x * 10 + d;
    }
    *mag = x;
    return MB_OK;
}

mb_status mb_json_u64(const mb_json *v, uint64_t *out)
{
    bool neg = false;
    uint64_t m = 0;
    mb_status st = int_text(v, &neg, &m);
    if (st) return st;
    if (neg && m) return mb_errf(MB_ERR_INVALID, "expected unsigned integer, got %s", v->str);
    *out = m;
    return MB_OK;
}

mb_status mb_json_i64(const mb_json *v, int64_t *out)
{
    bool neg = false;
    uint64_t m = 0;
    mb_status st = int_text(v, &neg, &m);
    if (st) return st;
    if (neg ? m > (uint64_t)INT64_MAX + 1 : m > (uint64_t)INT64_MAX)
        return mb_errf(MB_ERR_INVALID, "integer %s out of range", v->str);
    *out = neg ? (int64_t)(0 - m) : (int64_t)m;
    return MB_OK;
}

const char *mb_json_kind_name(mb_json_kind k)
{
    switch (k) {
    case MB_JSON_NULL: return "null";
    case MB_JSON_BOOL: return "bool";
    case MB_JSON_NUM: return "number";
    case MB_JSON_STR: return "string";
    case MB_JSON_ARR: return "array";
    case MB_JSON_OBJ: return "object";
    }
    return "?";
}
