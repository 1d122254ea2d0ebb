/* libvirt's event loop on a context of its own: timers and watches that
 * libvirt registers run in the thread libvirt-events, never on the main
 * context, and their free callbacks come after removal.  No libvirtd
 * needed: the test calls libvirt's event API as libvirt itself would. */
#include "lvevents.h"

#include <glib-unix.h>
#include <libvirt/libvirt.h>
#include <unistd.h>

typedef struct {
  GMutex lock;
  GCond cond;
  guint timer_calls, watch_calls, freed;
  int events;
  gboolean in_thread, on_main;
} State;

static State st;

static void
wake_waiters (void)
{
  g_cond_broadcast (&st.cond);
}

static void
on_timer (int timer, void *opaque)
{
  (void) timer;
  (void) opaque;
  g_mutex_lock (&st.lock);
  st.timer_calls++;
  st.in_thread = shd_lv_events_in_thread ();
  st.on_main |= g_main_context_is_owner (g_main_context_default ());
  wake_waiters ();
  g_mutex_unlock (&st.lock);
}

static void
on_watch (int watch, int fd, int events, void *opaque)
{
  char buf[16];

  (void) watch;
  (void) opaque;
  if (read (fd, buf, sizeof buf) < 0)
    return;
  g_mutex_lock (&st.lock);
  st.watch_calls++;
  st.events |= events;
  wake_waiters ();
  g_mutex_unlock (&st.lock);
}

static void
on_free (void *opaque)
{
  (void) opaque;
  g_mutex_lock (&st.lock);
  st.freed++;
  wake_waiters ();
  g_mutex_unlock (&st.lock);
}

/* Waits up to 2 s for *counter to reach n */
static gboolean
wait_for (guint *counter, guint n)
{
  gint64 end = g_get_monotonic_time () + 2 * G_USEC_PER_SEC;
  gboolean ok = TRUE;

  g_mutex_lock (&st.lock);
  while (*counter < n && ok)
    ok = g_cond_wait_until (&st.cond, &st.lock, end);
  ok = *counter >= n;
  g_mutex_unlock (&st.lock);
  return ok;
}

static void
test_events (void)
{
  g_autoptr (GError) error = NULL;
  int fds[2];
  int timer, watch;

  g_assert_true (shd_lv_events_start (&error));
  g_assert_no_error (error);
  /* the main context is owned here and never iterated: nothing of
   * libvirt's may need it */
  g_assert_true (g_main_context_acquire (g_main_context_default ()));

  timer = virEventAddTimeout (10, on_timer, NULL, on_free);
  g_assert_cmpint (timer, >, 0);
  g_assert_true (wait_for (&st.timer_calls, 3));
  g_assert_true (st.in_thread);
  g_assert_false (st.on_main);
  /* disabled: no more calls */
  virEventUpdateTimeout (timer, -1);
  g_usleep (50 * 1000);
  g_mutex_lock (&st.lock);
  st.timer_calls = 0;
  g_mutex_unlock (&st.lock);
  g_usleep (100 * 1000);
  g_assert_cmpuint (st.timer_calls, ==, 0);
  g_assert_cmpint (virEventRemoveTimeout (timer), ==, 0);
  g_assert_true (wait_for (&st.freed, 1));

  g_assert_true (g_unix_open_pipe (fds, FD_CLOEXEC, NULL));
  watch = virEventAddHandle (fds[0], VIR_EVENT_HANDLE_READABLE, on_watch, NULL, on_free);
  g_assert_cmpint (watch, >, 0);
  g_assert_cmpint (write (fds[1], "x", 1), ==, 1);
  g_assert_true (wait_for (&st.watch_calls, 1));
  g_assert_true (st.events & VIR_EVENT_HANDLE_READABLE);
  g_assert_cmpint (virEventRemoveHandle (watch), ==, 0);
  g_assert_cmpint (virEventRemoveHandle (watch), ==, -1);
  g_assert_true (wait_for (&st.freed, 2));

  shd_lv_events_stop ();
  g_main_context_release (g_main_context_default ());
  close (fds[0]);
  close (fds[1]);
}

int
main (int argc, char **argv)
{
  g_test_init (&argc, &argv, NULL);
  g_mutex_init (&st.lock);
  g_cond_init (&st.cond);
  g_test_add_func ("/lvevents/own-thread", test_events);
  return g_test_run ();
}
