/* What shadowctl's files share.
 *
 * Commands come from tables of CtlCommand (shadowctl.c for shadowctl's
 * word order, virsh.c for virsh-shadow's); each runs with its argv
 * starting at the command's name, as a GOptionContext wants it. */
#pragma once

#include <json-glib/json-glib.h>
#include <stdlib.h>

G_BEGIN_DECLS

#define EXIT_USAGE 2

typedef struct CtlCommand CtlCommand;
struct CtlCommand {
  const char *name;
  int (*run) (const CtlCommand *cmd, int argc, char **argv);
  gboolean flag;                /* attach (not detach), switch (not prewarm), pause */
};

/* Where the commands go (--control, $SHADOWD_CONTROL), how long they may
 * take, the program's name in messages, virsh-shadow's --connect */
extern const char *ctl_control_path;
extern guint ctl_timeout_ms;
extern const char *ctl_prog;
extern const char *ctl_connect_uri;

/* ---- commands.c ---- */
JsonObject *ctl_request (const char *command);
/* Sends req (and frees it); EXIT_SUCCESS with the answer, or the error
 * printed */
int ctl_call (JsonObject *req, JsonNode **out);
gboolean ctl_parse_opts (int *argc, char ***argv, const char *usage_text,
                         GOptionEntry *entries, guint min_args, guint max_args);
/* 90, 90s, 15m, 6h, 7d -> seconds; -1 when malformed */
double ctl_parse_duration (const char *s);
/* The disk's libvirt state, or NULL when shadowd does not know it (yet) */
JsonObject *ctl_libvirt_state (const char *name);
int ctl_cmd_status (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_history (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_forecast (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_disk_tier (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_pause (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_libvirt (const CtlCommand *cmd, int argc, char **argv);
int ctl_cmd_attach (const CtlCommand *cmd, int argc, char **argv);

/* ---- move-cmd.c ---- */
int ctl_cmd_move (const CtlCommand *cmd, int argc, char **argv);

/* ---- backtest-cmd.c ---- */
int ctl_cmd_backtest (const CtlCommand *cmd, int argc, char **argv);

/* ---- import-cmd.c ---- */
int ctl_cmd_import (const CtlCommand *cmd, int argc, char **argv);

/* ---- simulate-cmd.c ---- */
int ctl_cmd_simulate (const CtlCommand *cmd, int argc, char **argv);

/* ---- virsh.c ---- */
int ctl_virsh_main (int argc, char **argv);

/* ---- output.c ---- */
void ctl_print_json (JsonNode *node);
double ctl_num (JsonObject *o, const char *name);          /* NAN when absent */
const char *ctl_str (JsonObject *o, const char *name, const char *dflt);
char *ctl_fmt_time (double t);
char *ctl_fmt_num (double v, const char *fmt);              /* "-" when not finite */
void ctl_print_status (JsonArray *a);
void ctl_print_libvirt (JsonArray *a);

G_END_DECLS
