/* dlq_commands.c — `mailbus dlq` over NATS: <p>.cmd.dlq.<op>, cmd/1 in
 * (JSON or msgpack), one JSON object out. The work is bus/dlq.c's, the same
 * functions the CLI calls; this file only maps arguments and replies.
 *
 *   dlq.list   [stage]                -> {"ok":true,"count":N,"dead_letters":[...],
 *                                         "truncated":false}
 *              each entry as `mailbus dlq list --json` prints it, without the
 *              payload ("data":"", "data_bytes" says its size); entries stop
 *              (truncated:true) before the reply would pass the server's
 *              max_payload.
 *   dlq.show   id                     -> {"ok":true,"dead_letter":{...}} with the
 *              payload (base64) when it fits in max_payload
 *   dlq.retry  id | all:true [stage]  -> {"ok":true,"retried":N}
 *   dlq.purge  [older_than] [stage]   -> {"ok":true,"purged":N}
 *
 * e.g. `nats req mailbus.cmd.dlq.retry '{"id":12}'`. */
#include "stages/scan/dlq_commands.h"

#include "util/log.h"

#include <inttypes.h>
#include <string.h>

/* Room kept under max_payload for the reply's frame and NATS headers. */
#define REPLY_MARGIN 1024

typedef struct {
    mb_buf *reply;
    size_t limit;     /* bytes the reply may reach */
    size_t count;
    bool truncated;
    mb_status err;
} list_ctx;

static int list_one(void *vctx, uint64_t dlq_seq, const mb_rec_dead *rec)
{
    list_ctx *l = vctx;
    mb_buf one = MB_BUF_INIT;
    l->err = mb_bus_dlq_json(dlq_seq, rec, false, &one);
    if (l->err == MB_OK && l->reply->len + one.len + 1 > l->limit)
        l->truncated = true;
    else if (l->err == MB_OK && l->count)
        l->err = mb_buf_putc(l->reply, ',');
    if (l->err == MB_OK && !l->truncated) {
        l->err = mb_buf_append(l->reply, one.data, one.len);
        l->count++;
    }
    mb_buf_free(&one);
    return l->err != MB_OK || l->truncated;
}

static mb_status dlq_list(mb_bus *b, const mb_rec_command *c, mb_buf *reply)
{
    size_t max = mb_bus_max_payload(b);
    list_ctx l = {.reply = reply, .limit = max > 2 * REPLY_MARGIN ? max - REPLY_MARGIN : max / 2};
    mb_status s = mb_buf_puts(reply, "{\"ok\":true,\"dead_letters\":[");
    if (!s) {
        s = mb_bus_dlq_list(b, c->stage, list_one, &l);
        if (s == MB_ERR_NOTFOUND) /* nothing provisioned yet: nothing dead yet */
            s = MB_OK;
    }
    if (!s) s = l.err;
    if (!s) s = mb_buf_printf(reply, "],\"count\":%zu,\"truncated\":%s}", l.count,
                              l.truncated ? "true" : "false");
    return s;
}

typedef struct {
    mb_bus *bus;
    mb_buf *reply;
    mb_status err;
} show_ctx;

static int show_one(void *vctx, uint64_t dlq_seq, const mb_rec_dead *rec)
{
    show_ctx *sh = vctx;
    size_t max = mb_bus_max_payload(sh->bus);
    /* With the payload (base64) if the reply fits on the bus; otherwise
     * without it ("data_bytes" still tells its size). */
    for (int with_data = 1; with_data >= 0; with_data--) {
        mb_buf_reset(sh->reply);
        sh->err = mb_buf_puts(sh->reply, "{\"ok\":true,\"dead_letter\":");
        if (!sh->err) sh->err = mb_bus_dlq_json(dlq_seq, rec, with_data, sh->reply);
        if (!sh->err) sh->err = mb_buf_putc(sh->reply, '}');
        if (sh->err || sh->reply->len + REPLY_MARGIN <= max)
            break;
    }
    return 0;
}

static mb_status need_id(const char *op, const mb_rec_command *c)
{
    if (!c->id)
        return mb_errf(MB_ERR_INVALID, "%s needs \"id\": a dead letter's dlq_seq (dlq.list)", op);
    return MB_OK;
}

mb_status mb_scan_dlq_command(mb_bus *b, const char *op, const mb_rec_command *c, mb_buf *reply)
{
    mb_status s;
    size_t done = 0;
    if (!strcmp(op, "dlq.list"))
        return dlq_list(b, c, reply);
    if (!strcmp(op, "dlq.show")) {
        show_ctx sh = {.bus = b, .reply = reply};
        if ((s = need_id(op, c)) || (s = mb_bus_dlq_get(b, c->id, show_one, &sh)))
            return s;
        return sh.err;
    }
    if (!strcmp(op, "dlq.retry")) {
        if (!c->id == !c->all)
            return mb_errf(MB_ERR_INVALID, "dlq.retry needs \"id\" (a dlq_seq) or \"all\":true");
        if (c->id) {
            s = mb_bus_dlq_retry(b, c->id);
            done = s == MB_OK;
        } else {
            s = mb_bus_dlq_each(b, MB_BUS_DLQ_RETRY, c->stage, 0, &done);
        }
    } else if (!strcmp(op, "dlq.purge")) {
        int64_t before_ms;
        if (c->id)
            return mb_errf(MB_ERR_INVALID, "dlq.purge takes [older_than] and [stage], not \"id\"");
        s = mb_bus_dlq_cutoff(c->older_than, &before_ms);
        if (!s) s = mb_bus_dlq_each(b, MB_BUS_DLQ_PURGE, c->stage, before_ms, &done);
    } else {
        return mb_errf(MB_ERR_INVALID, "unknown command '%s' (dlq.list, dlq.show, dlq.retry, "
                                        "dlq.purge)", op);
    }
    bool retry = !strcmp(op, "dlq.retry");
    if (done)
        MB_INFO(NULL, NULL, "%s: %zu dead letter%s %s%s%s", op, done, done == 1 ? "" : "s",
                retry ? "retried" : "purged", c->stage ? " of stage " : "",
                c->stage ? c->stage : "");
    if (s)
        return s;
    return mb_buf_printf(reply, "{\"ok\":true,\"%s\":%zu}", retry ? "retried" : "purged", done);
}
