/* libvirt's event loop on a thread and a GMainContext of its own.
 *
 * libvirt's client needs an event loop for its events, keepalives and
 * connection-close notices.  The one virEventRegisterDefaultImpl()
 * installs is GLib's *global default* context since libvirt 6: whoever
 * iterates that context (shadowd's main loop) runs libvirt's socket I/O
 * and callbacks, and a thread calling virEventRunDefaultImpl() competes
 * with the main loop for it, dispatching shadowd's own sources whenever
 * the main loop lets go (between two g_main_loop_run()).  So shadowd
 * registers an implementation of its own (virEventRegisterImpl) whose
 * watches and timers live on a private context, iterated by the thread
 * "libvirt-events" and by nothing else.
 *
 * The implementation is the process's (libvirt allows one): registered
 * once; the thread is started and stopped with the libvirt layer. */
#pragma once

#include <glib.h>

G_BEGIN_DECLS

/* Registers the implementation (the first time) and starts the thread. */
gboolean shd_lv_events_start (GError **error);
/* Stops the thread and waits for it, then runs what is due (the free
 * callbacks of watches and timers removed last).  What libvirt still has
 * registered stays, and runs again after the next start.  Not from that
 * thread. */
void shd_lv_events_stop (void);
/* TRUE in the thread "libvirt-events" */
gboolean shd_lv_events_in_thread (void);

G_END_DECLS
