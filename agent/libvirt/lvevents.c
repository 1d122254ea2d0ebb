/* libvirt's event loop on a context of its own; see lvevents.h.
 *
 * libvirt calls the six functions of virEventRegisterImpl() from any
 * thread, with its own locks held, and its callbacks may call them back:
 * they only take our lock around the tables and never call libvirt with
 * it held.  A removed watch or timer may be dispatching at that moment in
 * the loop's thread, so its free callback runs later, from an idle source
 * of the same context, after that dispatch. */
#include "lvevents.h"

#include <glib-unix.h>
#include <libvirt/libvirt.h>

typedef struct {
  int id;
  int fd;
  int events;                   /* VIR_EVENT_HANDLE_*; 0: disabled */
  GSource *source;              /* NULL while disabled */
  virEventHandleCallback cb;
  void *opaque;
  virFreeCallback ff;
} Watch;

typedef struct {
  int id;
  int interval;                 /* ms; -1: disabled */
  GSource *source;
  virEventTimeoutCallback cb;
  void *opaque;
  virFreeCallback ff;
} Timer;

static GMutex lock;
static GMainContext *context;
static GHashTable *watches;     /* id -> Watch */
static GHashTable *timers;      /* id -> Timer */
static int next_id = 1;
static GThread *thread;
static gint running;

/* ---- watches ---- */

static gboolean
watch_dispatch (gint fd, GIOCondition cond, gpointer data)
{
  Watch *w = data;
  int events = 0;

  (void) fd;
  if (cond & G_IO_IN)
    events |= VIR_EVENT_HANDLE_READABLE;
  if (cond & G_IO_OUT)
    events |= VIR_EVENT_HANDLE_WRITABLE;
  if (cond & G_IO_HUP)
    events |= VIR_EVENT_HANDLE_HANGUP;
  if (cond & G_IO_ERR)
    events |= VIR_EVENT_HANDLE_ERROR;
  w->cb (w->id, w->fd, events, w->opaque);
  return G_SOURCE_CONTINUE;
}

/* With the lock held */
static void
watch_arm (Watch *w, int events)
{
  GIOCondition cond = G_IO_HUP | G_IO_ERR;

  if (w->source) {
    g_source_destroy (w->source);
    g_clear_pointer (&w->source, g_source_unref);
  }
  w->events = events;
  if (events == 0)
    return;
  if (events & VIR_EVENT_HANDLE_READABLE)
    cond |= G_IO_IN;
  if (events & VIR_EVENT_HANDLE_WRITABLE)
    cond |= G_IO_OUT;
  w->source = g_unix_fd_source_new (w->fd, cond);
  g_source_set_callback (w->source, G_SOURCE_FUNC (watch_dispatch), w, NULL);
  g_source_attach (w->source, context);
}

static int
watch_add (int fd, int events, virEventHandleCallback cb, void *opaque, virFreeCallback ff)
{
  Watch *w = g_new0 (Watch, 1);
  int id;

  w->fd = fd;
  w->cb = cb;
  w->opaque = opaque;
  w->ff = ff;
  g_mutex_lock (&lock);
  id = w->id = next_id++;
  watch_arm (w, events);
  g_hash_table_insert (watches, GINT_TO_POINTER (id), w);
  g_mutex_unlock (&lock);
  return id;
}

static void
watch_update (int id, int events)
{
  Watch *w;

  g_mutex_lock (&lock);
  w = g_hash_table_lookup (watches, GINT_TO_POINTER (id));
  if (w && w->events != events)
    watch_arm (w, events);
  g_mutex_unlock (&lock);
}

static gboolean
watch_free_later (gpointer data)
{
  Watch *w = data;

  if (w->ff)
    w->ff (w->opaque);
  g_free (w);
  return G_SOURCE_REMOVE;
}

static void
defer (GSourceFunc func, gpointer data)
{
  GSource *idle = g_idle_source_new ();

  g_source_set_callback (idle, func, data, NULL);
  g_source_attach (idle, context);
  g_source_unref (idle);
}

static int
watch_remove (int id)
{
  Watch *w;

  g_mutex_lock (&lock);
  w = g_hash_table_lookup (watches, GINT_TO_POINTER (id));
  if (w) {
    g_hash_table_remove (watches, GINT_TO_POINTER (id));
    watch_arm (w, 0);
    defer (watch_free_later, w);
  }
  g_mutex_unlock (&lock);
  return w ? 0 : -1;
}

/* ---- timers ---- */

static gboolean
timer_dispatch (gpointer data)
{
  Timer *t = data;

  t->cb (t->id, t->opaque);
  return G_SOURCE_CONTINUE;
}

/* With the lock held */
static void
timer_arm (Timer *t, int interval)
{
  if (t->source) {
    g_source_destroy (t->source);
    g_clear_pointer (&t->source, g_source_unref);
  }
  t->interval = interval;
  if (interval < 0)
    return;
  /* 0: on every iteration, as libvirt means it */
  t->source = g_timeout_source_new ((guint) interval);
  g_source_set_callback (t->source, timer_dispatch, t, NULL);
  g_source_attach (t->source, context);
}

static int
timer_add (int interval, virEventTimeoutCallback cb, void *opaque, virFreeCallback ff)
{
  Timer *t = g_new0 (Timer, 1);
  int id;

  t->cb = cb;
  t->opaque = opaque;
  t->ff = ff;
  g_mutex_lock (&lock);
  id = t->id = next_id++;
  t->interval = -1;
  timer_arm (t, interval);
  g_hash_table_insert (timers, GINT_TO_POINTER (id), t);
  g_mutex_unlock (&lock);
  return id;
}

static void
timer_update (int id, int interval)
{
  Timer *t;

  g_mutex_lock (&lock);
  t = g_hash_table_lookup (timers, GINT_TO_POINTER (id));
  if (t && t->interval != interval)
    timer_arm (t, interval);
  g_mutex_unlock (&lock);
}

static gboolean
timer_free_later (gpointer data)
{
  Timer *t = data;

  if (t->ff)
    t->ff (t->opaque);
  g_free (t);
  return G_SOURCE_REMOVE;
}

static int
timer_remove (int id)
{
  Timer *t;

  g_mutex_lock (&lock);
  t = g_hash_table_lookup (timers, GINT_TO_POINTER (id));
  if (t) {
    g_hash_table_remove (timers, GINT_TO_POINTER (id));
    timer_arm (t, -1);
    defer (timer_free_later, t);
  }
  g_mutex_unlock (&lock);
  return t ? 0 : -1;
}

/* ---- the thread ---- */

static gpointer
register_once (gpointer data)
{
  (void) data;
  context = g_main_context_new ();
  watches = g_hash_table_new (NULL, NULL);
  timers = g_hash_table_new (NULL, NULL);
  virEventRegisterImpl (watch_add, watch_update, watch_remove,
                        timer_add, timer_update, timer_remove);
  return NULL;
}

static gpointer
loop (gpointer data)
{
  (void) data;
  g_main_context_push_thread_default (context);
  while (g_atomic_int_get (&running))
    g_main_context_iteration (context, TRUE);
  g_main_context_pop_thread_default (context);
  return NULL;
}

gboolean
shd_lv_events_start (GError **error)
{
  static GOnce once = G_ONCE_INIT;

  g_once (&once, register_once, NULL);
  if (thread)
    return TRUE;
  g_atomic_int_set (&running, 1);
  thread = g_thread_try_new ("libvirt-events", loop, NULL, error);
  return thread != NULL;
}

void
shd_lv_events_stop (void)
{
  if (thread == NULL)
    return;
  g_atomic_int_set (&running, 0);
  g_main_context_wakeup (context);
  g_thread_join (g_steal_pointer (&thread));
  /* what is already due (the free callbacks of what was just removed) */
  while (g_main_context_iteration (context, FALSE))
    ;
}

gboolean
shd_lv_events_in_thread (void)
{
  return thread != NULL && g_thread_self () == thread;
}
