/* The libvirt layer's own types, shared by its files (lvdaemon.h has the
 * public side).
 *
 * Threads, and what each may touch:
 *
 *   main loop      everything marked (main) below: the domains, their
 *                  disks and agents, the decisions.  It makes no libvirt
 *                  call at all, not even to free a libvirt object.
 *   lv->calls      a ShdLvWorker (lvworker.h): connection set-up and
 *                  tear-down, look-ups, metadata and XML reads, insertions
 *                  and removals (lvattach.h).  Work gets what it needs
 *                  copied in and hands results back through its GTask.
 *   lv->monitor    a ShdLvWorker: the QMP passthrough of the domains'
 *                  agents (virDomainQemuMonitorCommand), so that a long
 *                  insertion does not hold up sampling and the reverse.
 *   libvirt-events libvirt's event loop, on a context of its own
 *                  (lvevents.h); its callbacks copy what they get into an
 *                  Ev and post it to the main loop.
 *
 * Lifetimes: a Conn is atomically reference-counted (the event thread and
 * the workers hold it); the list in lv, every libvirt callback registration
 * (released by libvirt's freecb), every queued Ev and every job hold a
 * reference.  A Dom is reference-counted on the main loop (its conn's
 * table and the jobs about it).  Jobs are GTasks whose source object is
 * the ShdLibvirt, so it lives until the last one completed.  Shutdown:
 * cancel (lv->cancel), let the jobs complete, close the connections and
 * stop the event thread in a last job, close the workers. */
#pragma once

#include "lvdaemon.h"
#include "lvattach.h"
#include "lvmeta.h"
#include "lvworker.h"
#include "qmp.h"

#include <libvirt/libvirt.h>
#include <libvirt/libvirt-qemu.h>
#include <libvirt/virterror.h>

G_BEGIN_DECLS

#define LV_RECONNECT_S 5        /* between attempts to reach libvirtd */
#define LV_RESCAN_S 30          /* every domain is looked at again this often */
#define LV_GRACE_S 10           /* shutdown waits this long for libvirt calls in flight */

typedef struct _Conn Conn;
typedef struct _Dom Dom;

struct _ShdLibvirt {
  GObject parent_instance;
  ShdDaemon *dm;
  ShdConfig *config;            /* the daemon's */
  GPtrArray *conns;             /* Conn, in the order of the URIs */
  ShdLvWorker *calls;
  ShdLvWorker *monitor;
  ShdLvWorker *mover;           /* permanent moves (lvmove.c), one at a time */
  GHashTable *moves;            /* DOMAIN.TARGET -> LvMove, each disk's last (main) */
  GCancellable *cancel;         /* every job's; cancelled by shutdown */
  gboolean events;              /* libvirt's event loop was started (lvevents.h) */
  guint rescan_id;
  guint jobs;                   /* jobs in flight (main) */
  gboolean started;
  gboolean stopping;
  gboolean closing;             /* the last job is on its way */
  GTask *shutdown;
  guint grace_id;
};

struct _Conn {
  /* set once */
  char *uri;
  guint index;
  GMainContext *context;        /* where events go */
  /* any thread */
  gint generation;              /* atomic; bumped on each connection and loss */
  GMutex lock;                  /* guards what follows */
  virConnectPtr vconn;
  int cb_lifecycle, cb_metadata, cb_removed, cb_job, cb_qemu;
  gboolean close_cb;            /* a close callback is registered */
  /* main */
  ShdLibvirt *lv;               /* NULL once shut down: events and jobs do nothing */
  GHashTable *doms;             /* uuid -> Dom */
  gboolean connected;
  gboolean opening;             /* a connect job is in flight */
  guint dropped;                /* events that came while shadowd stopped */
  guint retry_id;
  char *last_error;
};

/* A running domain with shadow metadata, or being looked at (main) */
struct _Dom {
  Conn *c;                      /* a reference */
  char *uuid;
  char *name;
  ShdQmp *qmp;                  /* the passthrough, shared by its disks' agents */
  GHashTable *disks;            /* target -> LvDisk */
  GHashTable *held;             /* targets the operator detached */
  gboolean busy, again, stopping;
  char *meta_error;             /* the last one logged */
};

/* Where a domain disk's shadow is */
typedef enum {
  LV_NEW,                       /* described, not looked at yet */
  LV_ATTACHING,
  LV_ATTACHED,                  /* in place, its agent running */
  LV_DETACHING,
  LV_DETACHED,                  /* given back by the operator, until attach */
  LV_ERROR,                     /* cannot be attached: see error */
  LV_N_STATES
} LvState;

const char *lv_state_name (LvState state);

/* One disk of a domain's metadata (main) */
typedef struct {
  Dom *dom;
  char *target;
  char *name;                   /* DOMAIN.TARGET */
  char *layout;                 /* shd_lv_disk_layout_key of the attached spec */
  char *full;                   /* shd_lv_disk_full_key: recreate the agent on change */
  ShdDiskConfig *cfg;
  char **local_images;          /* shd_lv_disk_local_images of the spec */
  ShdDisk *disk;                /* the agent, while attached */
  LvState state;
  char *error;
  guint64 chunk_size;
  double attach_ms;
  gboolean adopted;
} LvDisk;

/* ---- jobs (lvdaemon.c) ---- */

/* In a worker thread: FALSE with error on failure. */
typedef gboolean (*LvWorkFunc) (gpointer data, GError **error);
/* On the main loop, once the work ran: error is the work's, or
 * G_IO_ERROR_CANCELLED when shadowd stops (then only clean up). */
typedef void (*LvDoneFunc) (ShdLibvirt *lv, gpointer data, const GError *error);

void lv_run (ShdLibvirt *lv, ShdLvWorker *worker, LvWorkFunc work, LvDoneFunc done,
             gpointer data, GDestroyNotify free_data);

/* ---- connections (lvconn.c) ---- */

Conn *conn_new (ShdLibvirt *lv, const char *uri, guint index);
Conn *conn_ref (Conn *c);
void conn_unref (Conn *c);
/* In a worker: a reference on the connection, or NULL with error. */
virConnectPtr conn_get (Conn *c, GError **error);
/* Connects in a worker (again after a loss), adopting running domains. */
void conn_connect (Conn *c);
/* Shutdown, on the main loop: forget the domains and timers. */
void conn_detach (Conn *c);
/* Shutdown, in a worker: deregister the callbacks and close. */
void conn_close_now (Conn *c);
/* A libvirt error as a GError */
void lv_set_error (GError **error, const char *what);

/* ---- domains (lvdomain.c) ---- */

Dom *dom_get (Conn *c, const char *uuid, const char *name);
void dom_unref (Dom *d);
/* The domain stopped: its disks are no longer managed; @migrated: it
 * runs on another host, and its host-local tier images are removed. */
void dom_gone (Conn *c, const char *uuid, gboolean migrated);
/* In a worker: a QMP command through libvirt (ShdLvMonitorFunc; data is
 * the virDomainPtr) */
JsonNode *lv_monitor (const char *command, JsonObject *args, gpointer data, GError **error);
/* Reads the domain's metadata and XML, then inserts and removes shadows. */
void dom_reconcile (Dom *d);
/* The operator's attach or detach of target */
void dom_request (Dom *d, const char *target, gboolean attach);
/* Calls fn for every disk of every domain until it returns FALSE */
typedef gboolean (*LvDiskFunc) (Conn *c, Dom *d, LvDisk *k, gpointer data);
gboolean lv_foreach_disk (ShdLibvirt *lv, LvDiskFunc fn, gpointer data);

/* ---- permanent moves (lvmove.c) ---- */

typedef struct _LvMove LvMove;

void lv_move_unref (LvMove *m);
/* A move of the disk runs: the domain's look leaves the disk alone */
gboolean lv_move_running (Dom *d, const char *target);
/* The metadata records a move no move of this shadowd runs: take it up */
void lv_move_resume (Dom *d, const ShdLvDisk *spec);
/* The last move of disk DOMAIN.TARGET, or NULL */
JsonObject *lv_move_status (ShdLibvirt *lv, const char *name);
void lv_move_collect_metrics (ShdLibvirt *lv, ShdMetrics *metrics);
/* shadowctl move on a domain's disk (ShdMoveHandler) */
gboolean lv_move_handle (gpointer data, JsonObject *req, JsonNode **result, GError **error);

/* ---- control commands (lvcommands.c) ---- */

void lv_add_commands (ShdLibvirt *lv, ShdControl *ctl);

G_DEFINE_AUTOPTR_CLEANUP_FUNC (Conn, conn_unref)

G_END_DECLS
