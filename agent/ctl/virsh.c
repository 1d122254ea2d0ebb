/* virsh-shadow: shadowctl's commands in virsh's word order,
 * virsh-shadow [--connect URI] [--control SOCKET] DOMAIN DISK COMMAND; see ctl.h. */
#include "ctl.h"

#include <stdio.h>
#include <string.h>

static int
virsh_usage (FILE *to)
{
  fprintf (to,
           "Usage: virsh-shadow [--connect URI] [--control SOCKET] DOMAIN DISK COMMAND\n"
           "\n"
           "  attach            insert the shadow the domain's metadata describes\n"
           "  status [--json]   the shadow's state, tiers, load and last decision\n"
           "  switch TIER       switch the disk to TIER now (once it is in sync)\n"
           "  move TIER [--verify] [--verify-speed BYTES] [--copy-speed BYTES]\n"
           "            [--keep-as PATH] [--no-wait] | move --abort\n"
           "                    move the disk to TIER for good: libvirt's block copy into\n"
           "                    a new image in the tier's directory, compared with the\n"
           "                    disk by content (--verify), its pivot, the old image\n"
           "                    deleted (or kept as PATH)\n"
           "  detach            give the disk back to libvirt's own nodes\n"
           "  history [--decisions] [--since 1h] [--json]\n"
           "                    the disk's samples or decisions\n"
           "\n"
           "DISK is the target dev (vda).  Commands go to shadowd's control socket\n"
           "(default %s, or $SHADOWD_CONTROL).\n", "/run/shadowd/control.sock");
  return to == stdout ? EXIT_SUCCESS : EXIT_USAGE;
}

/* The status of a disk that is not attached is its libvirt state */
static int
virsh_status (const CtlCommand *cmd, int argc, char **argv)
{
  g_autoptr (JsonObject) o = ctl_libvirt_state (argv[1]);
  int rc;

  if (o && g_strcmp0 (ctl_str (o, "state", ""), "attached") != 0 &&
      (argc < 2 || strcmp (argv[argc - 1], "--json") != 0)) {
    g_autoptr (JsonArray) a = json_array_new ();

    json_array_add_object_element (a, json_object_ref (o));
    ctl_print_libvirt (a);
    return g_strcmp0 (ctl_str (o, "state", ""), "error") == 0 ? EXIT_FAILURE : EXIT_SUCCESS;
  }
  rc = ctl_cmd_status (cmd, argc, argv);
  /* a permanent move goes through libvirt: the libvirt state has it */
  if (o && json_object_has_member (o, "move") &&
      (argc < 2 || strcmp (argv[argc - 1], "--json") != 0)) {
    g_autoptr (JsonArray) a = json_array_new ();

    json_array_add_object_element (a, json_object_ref (o));
    ctl_print_libvirt (a);
  }
  return rc;
}

/* virsh-shadow DOMAIN DISK COMMAND: attach and detach take DOMAIN DISK,
 * the others DOMAIN.DISK */
static const CtlCommand commands[] = {
  { "attach", ctl_cmd_attach, TRUE },
  { "detach", ctl_cmd_attach, FALSE },
  { "switch", ctl_cmd_disk_tier, TRUE },
  { "move", ctl_cmd_move, FALSE },
  { "history", ctl_cmd_history, FALSE },
  { "status", virsh_status, FALSE },
};

int
ctl_virsh_main (int argc, char **argv)
{
  g_autofree char *name = NULL;
  g_autoptr (GPtrArray) args = g_ptr_array_new ();
  const char *domain, *disk, *command;
  const CtlCommand *cmd = NULL;
  int i = 1;

  ctl_prog = "virsh-shadow";
  while (i < argc && argv[i][0] == '-') {
    if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0)
      return virsh_usage (stdout);
    if ((strcmp (argv[i], "--connect") == 0 || strcmp (argv[i], "-c") == 0) && i + 1 < argc) {
      ctl_connect_uri = argv[i + 1];
      i += 2;
    } else if (g_str_has_prefix (argv[i], "--connect=")) {
      ctl_connect_uri = argv[i] + strlen ("--connect=");
      i++;
    } else if (strcmp (argv[i], "--control") == 0 && i + 1 < argc) {
      ctl_control_path = argv[i + 1];
      i += 2;
    } else {
      g_printerr ("virsh-shadow: unknown option '%s'\n", argv[i]);
      return virsh_usage (stderr);
    }
  }
  if (argc - i < 3)
    return virsh_usage (stderr);
  domain = argv[i];
  disk = argv[i + 1];
  command = argv[i + 2];
  for (guint c = 0; c < G_N_ELEMENTS (commands); c++)
    if (strcmp (command, commands[c].name) == 0)
      cmd = &commands[c];
  if (cmd == NULL) {
    g_printerr ("virsh-shadow: unknown command '%s'\n", command);
    return virsh_usage (stderr);
  }
  /* a shadowctl command line: COMMAND DOMAIN TARGET or COMMAND DOMAIN.TARGET,
   * then the rest */
  name = g_strdup_printf ("%s.%s", domain, disk);
  g_ptr_array_add (args, (gpointer) command);
  if (cmd->run == ctl_cmd_attach) {
    g_ptr_array_add (args, (gpointer) domain);
    g_ptr_array_add (args, (gpointer) disk);
  } else {
    g_ptr_array_add (args, name);
  }
  for (int j = i + 3; j < argc; j++)
    g_ptr_array_add (args, argv[j]);
  g_ptr_array_add (args, NULL);
  return cmd->run (cmd, (int) args->len - 1, (char **) args->pdata);
}
