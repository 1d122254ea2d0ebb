/* sd_notify; see notify.h. */
#include "notify.h"

#include <gio/gio.h>
#include <gio/gunixsocketaddress.h>
#include <string.h>

void
shd_notify (const char *message)
{
  const char *path = g_getenv ("NOTIFY_SOCKET");
  g_autoptr (GSocket) sock = NULL;
  g_autoptr (GSocketAddress) addr = NULL;

  if (path == NULL || *path == '\0')
    return;
  sock = g_socket_new (G_SOCKET_FAMILY_UNIX, G_SOCKET_TYPE_DATAGRAM,
                       G_SOCKET_PROTOCOL_DEFAULT, NULL);
  if (sock == NULL)
    return;
  if (path[0] == '@')
    addr = g_unix_socket_address_new_with_type (path + 1, -1,
                                                G_UNIX_SOCKET_ADDRESS_ABSTRACT);
  else
    addr = g_unix_socket_address_new (path);
  g_socket_send_to (sock, addr, message, strlen (message), NULL, NULL);
}
