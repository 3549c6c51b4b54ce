/* health.c — is the bus usable, and getting it back when JetStream lost its
 * store: mb_bus_check (connected? every stream there? provision again what
 * is missing) and the provisioning options it reuses. See bus.h "outages". */
#include "bus/internal.h"

#include "util/log.h"

#include <stdio.h>
#include <string.h>

/* A JetStream API request during a check: short, so that a server that
 * does not answer is reported in seconds, not after the request timeout. */
#define CHECK_WAIT_MS 2000

void mb_bus_remember_provision(mb_bus *b, const mb_bus_provision_opts *o)
{
    pthread_mutex_lock(&b->mu);
    memset(&b->prov, 0, sizeof b->prov);
    if (o)
        b->prov = *o;
    b->prov.backoff_ms = NULL;
    if (o && o->backoff_ms && o->backoff_len > 0 &&
        o->backoff_len <= (int)MB_ARRAY_LEN(b->prov_backoff)) {
        memcpy(b->prov_backoff, o->backoff_ms, (size_t)o->backoff_len * sizeof *o->backoff_ms);
        b->prov.backoff_ms = b->prov_backoff;
    } else {
        b->prov.backoff_len = 0;
    }
    b->prov_set = true;
    b->prov_gen++;
    pthread_mutex_unlock(&b->mu);
}

unsigned mb_bus_provision_gen(mb_bus *b)
{
    pthread_mutex_lock(&b->mu);
    unsigned g = b->prov_gen;
    pthread_mutex_unlock(&b->mu);
    return g;
}

bool mb_bus_connected(mb_bus *b)
{
    return natsConnection_Status(b->nc) == NATS_CONN_STATUS_CONNECTED;
}

/* MB_OK: the stream exists; MB_ERR_NOTFOUND: it does not; else the server
 * did not answer (MB_ERR_NET / MB_ERR_TIMEOUT). */
static mb_status stream_exists(mb_bus *b, const char *suffix)
{
    char name[MB_BUS_PREFIX_MAX + 16];
    mb_status rc = mb_bus_stream_name(b, suffix, name, sizeof name);
    if (rc != MB_OK)
        return rc;
    jsOptions jo;
    jsOptions_Init(&jo);
    jo.Wait = CHECK_WAIT_MS;
    jsStreamInfo *si = NULL;
    jsErrCode jerr = 0;
    natsStatus s = js_GetStreamInfo(&si, b->js, name, &jo, &jerr);
    jsStreamInfo_Destroy(si);
    if (s == NATS_OK)
        return MB_OK;
    if (s == NATS_NOT_FOUND || jerr == JSStreamNotFoundErr)
        return mb_errf(MB_ERR_NOTFOUND, "stream %s: not found", name);
    rc = mb_bus_nats_err(s, jerr, "stream info %s", name);
    return rc == MB_ERR_BUS ? mb_err_wrap(MB_ERR_NET, "jetstream") : rc;
}

mb_status mb_bus_check(mb_bus *b)
{
    static const char *const suffixes[] = {"FETCH", "PARSE", "STORE", "AVSCAN", "EVENTS", "DLQ"};
    if (!mb_bus_connected(b))
        return mb_errf(MB_ERR_NET, "nats: not connected (reconnecting)");
    const char *missing = NULL;
    for (size_t i = 0; i < MB_ARRAY_LEN(suffixes) && !missing; i++) {
        mb_status rc = stream_exists(b, suffixes[i]);
        if (rc == MB_ERR_NOTFOUND)
            missing = suffixes[i];
        else if (rc != MB_OK)
            return rc;
    }
    if (!missing)
        return MB_OK;
    char why[MB_BUS_PREFIX_MAX + 32];
    snprintf(why, sizeof why, "stream %s_%s is gone", b->upper, missing);
    return mb_bus_reprovision(b, why);
}

mb_status mb_bus_reprovision(mb_bus *b, const char *why)
{
    pthread_mutex_lock(&b->mu);
    bool known = b->prov_set;
    mb_bus_provision_opts o = b->prov;
    int64_t backoff[MB_ARRAY_LEN(b->prov_backoff)];
    memcpy(backoff, b->prov_backoff, sizeof backoff);
    if (o.backoff_ms)
        o.backoff_ms = backoff;
    pthread_mutex_unlock(&b->mu);
    if (!known)
        return mb_errf(MB_ERR_NOTFOUND, "%s, and this process never provisioned the bus", why);
    MB_WARN(NULL, NULL, "bus: %s (JetStream store lost?); provisioning every stream and "
            "consumer again", why);
    mb_status rc = mb_bus_provision(b, &o);
    if (rc != MB_OK)
        return mb_err_wrap(rc == MB_ERR_BUS ? MB_ERR_NET : rc, "provisioning again");
    return MB_OK;
}
